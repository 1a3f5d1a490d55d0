"""One path from values to features for every kind: a table's cells and JSON rows of the same rows
give the same matrix; missing values are NaN, unknown categories "other", bad values named."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bentos.schema.dense import Dense
from bentos.schema.encode import encode, encode_columns
from bentos.schema.kinds import Column, infer
from tests.support.tables import DEFAULT, PENGUINS, REAL, TITANIC


def _from_table(columns, frame):
    return encode_columns(columns, frame.__getitem__, len(frame), parse_strings=True)


def _from_json(columns, frame):
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    return encode_columns(
        columns, lambda name: [row[name] for row in rows], len(rows), parse_strings=False
    )


@pytest.mark.parametrize("table", REAL, ids=lambda t: t.name)
def test_a_tables_cells_and_json_rows_of_the_same_rows_give_the_same_features(table):
    frame = table.frame()
    columns = infer(frame, table.target)
    from_table, problems, unknown = _from_table(columns, frame)
    assert problems == []
    # Values outside the levels (too rare in training) are counted as unknown.
    assert unknown == {
        c.name: int((~frame[c.name].dropna().astype(str).isin(c.levels)).sum())
        for c in columns
        if c.kind == "categorical" and not frame[c.name].dropna().astype(str).isin(c.levels).all()
    }
    from_json, problems, _ = _from_json(columns, frame)
    assert problems == []
    np.testing.assert_array_equal(from_table, from_json)
    assert from_table.shape == (len(frame), sum(len(c.features) for c in columns))
    # Missing cells stay missing, for the forest to route.
    assert np.isnan(from_table).sum() == sum(
        frame[c.name].isna().sum() * len(c.features) for c in columns if c.is_feature
    )


def test_the_same_rows_read_back_from_csv_text_give_the_same_features(tmp_path):
    frame = PENGUINS.frame()
    columns = infer(frame, PENGUINS.target)
    frame.to_csv(tmp_path / "t.csv", index=False)
    as_text = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    np.testing.assert_array_equal(_from_table(columns, frame)[0], _from_table(columns, as_text)[0])


def test_an_unseen_category_is_the_other_level_and_counted():
    frame = TITANIC.frame()
    columns = infer(frame, TITANIC.target)
    sex = next(c for c in columns if c.name == "sex")
    rows = frame.head(3).assign(sex=["female", "unknown", "x"])
    matrix, problems, unknown = _from_table(columns, rows)
    assert problems == [] and unknown == {"sex": 2}
    j = [f for c in columns for f in c.features].index("sex")
    assert list(matrix[:, j]) == [sex.levels.index("female"), len(sex.levels), len(sex.levels)]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        (Column("b", "boolean", ""), "maybe", "expected true or false, got string 'maybe'"),
        (Column("b", "boolean", ""), 2, "expected true or false, got int 2"),
        (
            Column("c", "categorical", "", levels=("a", "b")),
            1.5,
            "expected text (a level such as 'a', 'b'), got float 1.5",
        ),
        (Column("c", "categorical", "", levels=("a",)), {"x": 1}, "got object"),
        (Column("d", "datetime", "", parts=("year",)), "31/05/2024", "expected an ISO-8601 date"),
        (Column("d", "datetime", "", parts=("year",)), 20240531, "expected an ISO-8601 date"),
        (Column("n", "numeric", ""), "many", "expected a number, got string 'many'"),
    ],
)
def test_a_value_that_cannot_be_its_columns_kind_is_named_with_row_and_column(
    column, value, reason
):
    _, problems, _ = encode_columns([column], lambda _: [None, value], 2, parse_strings=False)
    assert len(problems) == 1
    row, name, message = problems[0]
    assert (row, name) == (1, column.name) and reason in message


def test_booleans_read_every_spelling_of_true_and_false():
    column = Column("b", "boolean", "")
    values = [True, False, "Yes", "no", "TRUE", "f", 1, 0, None, ""]
    matrix, problems, _ = encode_columns(
        [column], lambda _: values, len(values), parse_strings=False
    )
    assert problems == []
    np.testing.assert_array_equal(matrix[:, 0], [1, 0, 1, 0, 1, 0, 1, 0, np.nan, np.nan])


def test_dense_fills_missing_values_adds_indicators_and_one_hot_categories():
    frame = PENGUINS.frame()
    columns = infer(frame, PENGUINS.target)
    matrix, _, _ = _from_table(columns, frame)
    dense = Dense.fit(columns, matrix)
    served = dense.apply(matrix)
    assert served.dtype == np.float32 and not np.isnan(served).any()
    # Standardized with the training rows' mean and spread (a constant column is left as is).
    np.testing.assert_allclose(served.mean(axis=0), 0, atol=1e-5)
    assert set(np.round(served.std(axis=0), 4)) <= {0.0, 1.0}
    x = served * np.array(dense.scale) + np.array(dense.center)
    names = dense.names
    assert x.shape == (len(frame), len(names))
    # island: 3 levels + other; sex: 2 + other, and an indicator (11 missing in training).
    assert [n for n in names if n.startswith(("island", "sex"))] == [
        "island=0",
        "island=1",
        "island=2",
        "island=3",
        "sex=0",
        "sex=1",
        "sex=2",
        "sex.missing",
    ]
    missing_sex = frame["sex"].isna().to_numpy()
    np.testing.assert_allclose(x[:, names.index("sex.missing")], missing_sex, atol=1e-6)
    median = np.nanmedian(frame["body_mass_g"])
    np.testing.assert_allclose(
        x[frame["body_mass_g"].isna().to_numpy(), names.index("body_mass_g")], median, rtol=1e-6
    )
    assert Dense.from_dict(dense.to_dict()) == dense


def test_an_all_numeric_complete_table_is_only_standardized():
    frame = DEFAULT.frame().drop(columns=["student"])
    columns = infer(frame, DEFAULT.target)
    matrix, _, _ = _from_table(columns, frame)
    dense = Dense.fit(columns, matrix)
    assert dense.trivial and dense.names == ["balance", "income"]
    want = (matrix - matrix.mean(axis=0)) / matrix.std(axis=0)
    np.testing.assert_allclose(dense.apply(matrix), want, rtol=1e-5, atol=1e-6)


_ANY = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=True)
    | st.sampled_from(["male", "female", " male", "", "  ", "yes", "No", "T", "1", "0", "x"])
    | st.text(max_size=4)
)


@settings(max_examples=400, deadline=None)
@given(values=st.lists(_ANY, max_size=8), kind=st.sampled_from(["categorical", "boolean"]))
# Found by CI: numpy's strip drops NUL characters, Python's keeps them (not a blank cell).
@example(values=["\x00", " \x00 ", "male\x00"], kind="categorical")
def test_a_list_of_values_encodes_as_the_same_values_in_a_column(values, kind):
    # JSON rows and V2 tensors take the list path; table cells the Series one.
    column = Column("c", kind, "", levels=("male", "female", "1") if kind == "categorical" else ())
    problems_list, problems_series = [], []
    listed = encode(column, list(values), parse_strings=False, problems=problems_list)
    series = encode(
        column, pd.Series(values, dtype=object), parse_strings=False, problems=problems_series
    )
    np.testing.assert_array_equal(listed.values, series.values)
    assert listed.unknown == series.unknown
    assert problems_list == problems_series


_TEXT = st.none() | st.sampled_from(["male", "female", " male", "", " \x1c", "1", "x"]) | st.text()


@settings(max_examples=400, deadline=None)
@given(values=st.lists(_TEXT, max_size=8))
@example(values=["\x1c", "\x85male", "\x00", "male\x00", "\u3000"])
def test_text_that_arrow_holds_encodes_as_the_same_values_as_a_list(values):
    # A Parquet or CSV column (pandas' default string type) is looked up in Arrow's C code; its
    # blank cells are what Python's str.strip() makes empty, as in the list path.
    column = Column("c", "categorical", "", levels=("male", "female", "1"))
    listed = encode(column, list(values), parse_strings=False, problems=[])
    arrow = encode(column, pd.Series(values, dtype="str"), parse_strings=False, problems=[])
    np.testing.assert_array_equal(listed.values, arrow.values)
    assert listed.unknown == arrow.unknown


def test_blank_means_what_python_strips():
    from bentos.schema.encode import _SPACE

    assert "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()) == _SPACE
