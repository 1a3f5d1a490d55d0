"""A column's values, as a JSON row, a V2 tensor or a table carries them, to the model's features:
one path for every kind and every door (bentos.schema.kinds says what each kind is).

Missing values (null, NaN, an empty cell, a Parquet null) are NaN in every kind: the forest
routes them per split, and the dense form (bentos.schema.dense) fills them for the TFLite model.
A categorical value outside the training levels is the "other" level, not an error; the count
of such values comes back so that the doors can report it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bentos.schema.cells import column as numbers
from bentos.schema.cells import is_missing, short, type_name
from bentos.schema.kinds import FALSE_WORDS, TRUE_WORDS, Column, date_part, parse_dates

# What Python's str.strip() removes (every character whose str.isspace(); a unit test holds the
# two equal): blank text is missing in every path. Written out: computing it took 60 ms.
_SPACE = (
    "\x09\x0a\x0b\x0c\x0d\x1c\x1d\x1e\x1f \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


@dataclass
class Encoded:
    values: np.ndarray  # [n rows, len(column.features)], float64, NaN where missing
    unknown: int = 0  # categorical values outside the training levels


def encode(column: Column, values: Any, *, parse_strings: bool, problems: list) -> Encoded:
    """`values` (a list of JSON values, or a table's Series) of one column; each value that
    cannot be the column's kind adds (row, column, reason) to `problems`."""
    if column.kind == "numeric":
        out = numbers(column.name, values, parse_strings, problems, missing_ok=True)
        return Encoded(out.reshape(-1, 1))
    if isinstance(values, list) and column.kind in ("boolean", "categorical"):
        # JSON rows and V2 tensors: a few values, each looked at once in Python, where pandas'
        # fixed cost per call would be most of a request's time (BENCHMARKS.md, "Real tables").
        return _listed(column, values, problems)
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    series = series.reset_index(drop=True)
    if column.kind == "boolean":
        return Encoded(_boolean(column, series, problems).reshape(-1, 1))
    if column.kind == "categorical":
        codes, unknown = _categorical(column, series, problems)
        return Encoded(codes.reshape(-1, 1), unknown)
    if column.kind == "datetime":
        return Encoded(_datetime(column, series, problems))
    raise ValueError(f"column {column.name!r} of kind {column.kind} is not a feature")


@functools.lru_cache(maxsize=256)
def _codes(levels: tuple[str, ...]) -> dict[str, float]:
    return {level: float(i) for i, level in enumerate(levels)}


def _listed(column: Column, values: list, problems: list) -> Encoded:
    """Booleans and categories value by value: JSON rows and V2 tensors, and table columns that
    are not plain text (tests hold both paths equal)."""
    out = np.empty(len(values), dtype=np.float64)
    unknown = 0
    if column.kind == "categorical":
        codes, other = _codes(column.levels), float(len(column.levels))
        for i, v in enumerate(values):
            if isinstance(v, str):
                if v.strip():
                    code = codes.get(v, other)
                    unknown += code == other
                    out[i] = code
                else:
                    out[i] = np.nan
            elif is_missing(v):
                out[i] = np.nan
            elif _whole(v):
                code = codes.get(str(int(v)), other)
                unknown += code == other
                out[i] = code
            else:
                out[i] = np.nan
                problems.append(
                    (
                        i,
                        column.name,
                        f"expected text (a level such as {_levels_hint(column)}), "
                        f"got {type_name(v)} {short(v)}",
                    )
                )
        return Encoded(out.reshape(-1, 1), unknown)
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_):
            out[i] = float(v)
        elif isinstance(v, str) and v.strip().lower() in TRUE_WORDS:
            out[i] = 1.0
        elif isinstance(v, str) and v.strip().lower() in FALSE_WORDS:
            out[i] = 0.0
        elif is_missing(v) or (isinstance(v, str) and not v.strip()):
            out[i] = np.nan
        elif isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
            out[i] = float(v)
        else:
            out[i] = np.nan
            problems.append(
                (i, column.name, f"expected true or false, got {type_name(v)} {short(v)}")
            )
    return Encoded(out.reshape(-1, 1))


def _missing(series: pd.Series) -> np.ndarray:
    """Missing values, and empty or blank text (an empty CSV cell)."""
    blank = series.map(lambda v: isinstance(v, str) and not v.strip())
    return (series.isna() | blank).to_numpy(dtype=bool)


def _boolean(column: Column, series: pd.Series, problems: list) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return _listed(column, series.tolist(), problems).values.ravel()


def _categorical(column: Column, series: pd.Series, problems: list) -> tuple[np.ndarray, int]:
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return _text_codes(column, series)
    if not (pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)):
        # A column of numbers named categorical: each value's text is its level.
        return _text_codes(column, series.astype(str).where(series.notna(), None))
    # Text mixed with other values: looked at one by one, as JSON rows are.
    listed = _listed(column, series.tolist(), problems)
    return listed.values.ravel(), listed.unknown


def _text_codes(column: Column, series: pd.Series) -> tuple[np.ndarray, int]:
    """A column of text and missing values only (what a table usually holds), in C: the same
    codes as the value-by-value path, without a Python call per value (BENCHMARKS.md, "Real
    tables")."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        return _arrow_codes(column, pa.array(series.array))
    text = series.astype(object).to_numpy()
    missing = series.isna().to_numpy(dtype=bool, copy=True)
    present = ~missing
    # Blank text is a missing value too (an empty CSV cell).
    # Python's strip, as the value-by-value path: numpy's also drops NUL characters, and a
    # generator is faster here than numpy's fixed-width copy.
    blank = np.zeros(len(text), dtype=bool)
    blank[present] = np.fromiter((not v.strip() for v in text[present]), bool, int(present.sum()))
    missing |= blank
    codes = pd.Index(column.levels).get_indexer(np.where(missing, None, text))
    unknown = (codes < 0) & ~missing
    out = codes.astype(np.float64)
    out[unknown] = len(column.levels)
    out[missing] = np.nan
    return out, int(unknown.sum())


def _arrow_codes(column: Column, text: pa.Array) -> tuple[np.ndarray, int]:
    """Text that Arrow holds (a Parquet or CSV column, pandas' default string type): looked up
    in Arrow's C code, which releases the GIL for the batch job's other threads, with no Python
    string made per value (BENCHMARKS.md, "Real tables")."""
    blank = pc.equal(pc.utf8_length(pc.utf8_trim(text, characters=_SPACE)), 0)
    missing = pc.fill_null(pc.or_(pc.is_null(text), blank), True).to_numpy(zero_copy_only=False)
    codes = pc.index_in(text, value_set=pa.array(column.levels, pa.string()))
    out = codes.to_numpy(zero_copy_only=False).astype(np.float64)  # null: NaN
    unknown = np.isnan(out) & ~missing
    out[unknown] = len(column.levels)
    out[missing] = np.nan
    return out, int(unknown.sum())


def _whole(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _levels_hint(column: Column) -> str:
    shown = ", ".join(repr(v) for v in column.levels[:3])
    return shown + (", ..." if len(column.levels) > 3 else "") if shown else "any text"


def _datetime(column: Column, series: pd.Series, problems: list) -> np.ndarray:
    out = np.full((len(series), len(column.parts)), np.nan)
    missing = _missing(series)
    present = np.flatnonzero(~missing)
    if not len(present):
        return out
    values = series.iloc[present]
    if not pd.api.types.is_datetime64_any_dtype(values):
        values = values.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
        bad = ~values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    else:
        bad = np.zeros(len(values), dtype=bool)
    stamps = parse_dates(values.where(~bad, None))
    bad |= stamps.isna().to_numpy(dtype=bool)
    for i in present[bad]:
        v = series.iat[i]
        problems.append(
            (
                int(i),
                column.name,
                f"expected an ISO-8601 date such as 2024-05-31 or 2024-05-31T13:45:00, "
                f"got {type_name(v)} {short(v)}",
            )
        )
    for j, part in enumerate(column.parts):
        out[present, j] = date_part(stamps, part).to_numpy(dtype=np.float64)
    return out


def encode_columns(
    columns: Sequence[Column], values_of: Callable[[str], Any], n_rows: int, *, parse_strings: bool
) -> tuple[np.ndarray, list[tuple[int, str, str]], dict[str, int]]:
    """Every feature column (`values_of(name)`: its values) to the feature matrix [n_rows,
    features]; with the problems, sorted by row, and the count of unknown categories by column."""
    problems: list[tuple[int, str, str]] = []
    unknown: dict[str, int] = {}
    parts = []
    for column in columns:
        if not column.is_feature:
            continue
        encoded = encode(
            column, values_of(column.name), parse_strings=parse_strings, problems=problems
        )
        parts.append(encoded.values)
        if encoded.unknown:
            unknown[column.name] = encoded.unknown
    matrix = np.hstack(parts) if parts else np.empty((n_rows, 0))
    problems.sort(key=lambda p: p[0])
    return matrix, problems, unknown
