"""The one validation path (bentos.schema), in process: generated JSON rows and table cells are
turned into a finite matrix or refused with a reason, never anything else."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bentos.errors import InputError
from bentos.schema import FeatureSchema
from bentos.training.data import load_builtin
from tests.support.strategies import FEATURES, json_values, rows

SCHEMA = FeatureSchema.from_training(load_builtin("iris").features, ["a", "b", "c"], "species")


@settings(max_examples=1500, deadline=None)
@given(st.lists(rows | json_values, max_size=6) | json_values)
def test_any_json_instances_give_a_finite_matrix_or_an_input_error(instances):
    try:
        x = SCHEMA.validate_instances(instances, max_rows=5)
    except InputError as exc:
        assert exc.message and isinstance(exc.to_dict()["error"], str)
        return
    assert x.shape == (len(instances), 4) and np.isfinite(x).all()
    for row, values in zip(instances, x, strict=True):
        assert [float(row[n]) for n in FEATURES] == values.tolist()


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
    for row, reason in zip(x, reasons, strict=True):
        assert (reason is None) == bool(np.isfinite(row).all())
