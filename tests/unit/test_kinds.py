"""Column kinds inferred from real tables and from the edge cases a user's table has."""

from __future__ import annotations

import pandas as pd
import pytest

from bentos.errors import DataError
from bentos.schema.kinds import Column, Overrides, infer, table
from tests.support.tables import DEFAULT, PENGUINS, TITANIC, TITANIC_NAMES


def _kinds(frame: pd.DataFrame, target: str, **overrides) -> dict[str, str]:
    return {c.name: c.kind for c in infer(frame, target, Overrides(**overrides))}


def test_real_tables_get_the_kinds_a_data_engineer_would_give_them():
    assert _kinds(TITANIC.frame(), TITANIC.target) == {
        "rownames": "identifier",  # passengers' names, one per row
        "sex": "categorical",
        "age": "numeric",
        "passengerClass": "categorical",
    }
    assert _kinds(DEFAULT.frame(), DEFAULT.target) == {
        "rownames": "identifier",  # 1..n: a row number
        "student": "boolean",  # Yes/No
        "balance": "numeric",
        "income": "numeric",
    }
    penguins = _kinds(PENGUINS.frame(), PENGUINS.target)
    assert penguins["rownames"] == "identifier" and penguins["island"] == "categorical"
    assert penguins["sex"] == "categorical" and penguins["year"] == "numeric"
    names = _kinds(TITANIC_NAMES.frame(), TITANIC_NAMES.target)
    assert names["Name"] == "identifier"  # 1,310 distinct in 1,313 rows


def test_missing_share_distinct_values_and_rare_levels_are_learnt():
    columns = {c.name: c for c in infer(TITANIC_NAMES.frame(), TITANIC_NAMES.target)}
    assert columns["Age"].missing == pytest.approx(557 / 1313, abs=1e-4)
    pclass = columns["PClass"]
    # One passenger's class is recorded as "*": rarer than min_count, so it is "other".
    assert pclass.distinct == 4 and pclass.levels == ("3rd", "1st", "2nd")


def test_iso_dates_and_timestamps_are_datetime_with_the_parts_that_vary():
    frame = pd.DataFrame(
        {
            "day": ["2024-01-01", "2024-02-15", "2024-03-31", None],
            "at": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-01 11:30", None, "2024-01-01 00:00"]
            ),
            "y": [0, 1, 0, 1],
        }
    )
    columns = {c.name: c for c in infer(frame, "y")}
    assert columns["day"].kind == "datetime" and columns["day"].parts == (
        "month",
        "day",
        "dayofweek",
    )
    assert columns["at"].features == ["at.hour", "at.minute"]


def test_flags_override_the_inferred_kind():
    frame = DEFAULT.frame()
    kinds = _kinds(
        frame, "default", categorical=("student",), ignore=("income",), numeric=("rownames",)
    )
    assert kinds == {
        "rownames": "numeric",
        "student": "categorical",
        "balance": "numeric",
        "income": "ignored",
    }


@pytest.mark.parametrize(
    ("frame", "overrides", "message"),
    [
        (
            pd.DataFrame({"a": [None, None, None], "y": [0, 1, 0]}),
            {},
            "feature column 'a' has no values",
        ),
        (
            pd.DataFrame({"a": [1, 2, 3], "y": [0, 1, 0]}),
            {"ignore": ("b",)},
            "'b' named in the flags",
        ),
        (pd.DataFrame({"a": [1, 2, 3], "y": [0, 1, 0]}), {"ignore": ("a",)}, "no feature columns"),
        (
            pd.DataFrame({"a": [f"v{i % 40}" for i in range(200)], "y": [0, 1] * 100}),
            {"max_levels": 30},
            "--ignore a",
        ),
        (
            pd.DataFrame({"a": ["2024-01-01", "soon"], "y": [0, 1]}),
            {"datetime": ("a",)},
            "'soon' is not a date",
        ),
        (pd.DataFrame({"a": ["1", "x"], "y": [0, 1]}), {"numeric": ("a",)}, "has text 'x'"),
        (
            pd.DataFrame({"a": [1, 2], "y": [0, 1]}),
            {"numeric": ("a",), "ignore": ("a",)},
            "named both",
        ),
    ],
)
def test_a_column_that_cannot_be_used_is_a_data_error_naming_it(frame, overrides, message):
    with pytest.raises(DataError, match=message):
        infer(frame, "y", Overrides(**overrides))


def test_kinds_round_trip_through_the_stored_schema():
    for column in infer(PENGUINS.frame(), PENGUINS.target):
        assert Column.from_dict(column.to_dict()) == column


def test_the_printed_table_has_a_line_per_column_with_kind_missing_distinct_and_why():
    lines = table(infer(TITANIC.frame(), TITANIC.target)).splitlines()
    assert lines[0].split() == ["column", "kind", "missing", "distinct", "why"]
    age = next(line for line in lines if line.startswith("age "))
    assert age.split()[:4] == ["age", "numeric", "20.1%", "98"]
