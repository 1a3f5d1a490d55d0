"""The one validation path (bentos.schema), in process: generated JSON rows and table cells are
turned into a matrix (NaN exactly where a value is missing) or refused with a reason, never
anything else."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bentos.errors import InputError
from bentos.schema import FeatureSchema
from bentos.training.data import load_builtin
from tests.support.strategies import FEATURES, json_values, rows

SCHEMA = FeatureSchema.from_training(load_builtin("iris").features, ["a", "b", "c"], "species")
# A schema from before column kinds: its models never saw a missing value, so none is accepted.
V1 = FeatureSchema(SCHEMA.features, SCHEMA.labels, SCHEMA.target)


def _missing(v) -> bool:
    return (
        v is None
        or (isinstance(v, float) and math.isnan(v))
        or (isinstance(v, str) and not v.strip())
    )


@settings(max_examples=1500, deadline=None)
@given(st.lists(rows | json_values, max_size=6) | json_values)
def test_any_json_instances_give_a_matrix_or_an_input_error(instances):
    try:
        x = SCHEMA.validate_instances(instances, max_rows=5)
    except InputError as exc:
        assert exc.message and isinstance(exc.to_dict()["error"], str)
        return
    assert x.shape == (len(instances), 4) and not np.isinf(x).any()
    for row, values in zip(instances, x, strict=True):
        for name, value in zip(FEATURES, values.tolist(), strict=True):
            assert math.isnan(value) if _missing(row[name]) else float(row[name]) == value


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.lists(st.text(max_size=6) | st.floats() | st.none(), min_size=4, max_size=4), max_size=8
    )
)
def test_any_table_cells_are_predicted_or_rejected_with_a_reason(cells):
    import pandas as pd

    frame = (
        pd.DataFrame(cells, columns=FEATURES, dtype=object)
        if cells
        else pd.DataFrame(columns=FEATURES)
    )
    x, reasons = SCHEMA.validate_frame(frame)
    assert len(reasons) == len(cells)
    for cell_row, row, reason in zip(cells, x, reasons, strict=True):
        assert (reason is None) == (not any(map(_bad, cell_row)))
        if reason is None:  # every cell a finite number or missing, and missing is NaN
            assert [_missing(c) for c in cell_row] == np.isnan(row).tolist()
            assert not np.isinf(row).any()


def _bad(v) -> bool:
    """Neither missing nor a finite number."""
    if _missing(v):
        return False
    try:
        return not math.isfinite(float(v))
    except (TypeError, ValueError):
        return True


def test_a_schema_from_before_kinds_refuses_missing_values():
    row = dict.fromkeys(FEATURES, 1.0)
    try:
        V1.validate_instances([{**row, FEATURES[0]: None}], max_rows=5)
    except InputError as exc:
        assert (
            exc.message
            == f"instances[0].{FEATURES[0]}: missing value (null or NaN); a finite number is required"
        )
    else:
        raise AssertionError("a v1 schema accepted a null")
    assert np.isnan(SCHEMA.validate_instances([{**row, FEATURES[0]: None}], max_rows=5)[0, 0])
