"""Cell by cell: a value of a JSON row or a table column to a float, or the reason it is not
one. Used by bentos.schema only; the fast paths there avoid these for input that fits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

Label = str | int


def one_value(name: str, row: Any) -> tuple:
    return (row[name],)


def column(
    name: str, values: Any, parse_strings: bool, problems: list, missing_ok: bool = False
) -> np.ndarray:
    """A column of numbers; a missing value (null, NaN, an empty cell) is NaN, and a problem
    unless `missing_ok` (a column whose model routes missing values)."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out = values.to_numpy(dtype=np.float64, na_value=np.nan)
            non_finite(name, out, problems, missing_ok)
            return out
        if parse_strings and pd.api.types.is_string_dtype(values):
            # Text columns (CSV read as text): parse in C, then explain only the failures.
            out = np.array(pd.to_numeric(values, errors="coerce"), dtype=np.float64)
            raw = values.to_numpy(dtype=object)
            for i in np.flatnonzero(~np.isfinite(out)):
                out[i] = _one(name, int(i), raw[i], parse_strings, problems, missing_ok)
            return out
        values = values.to_numpy(dtype=object)
    elif all(type(v) is float or type(v) is int for v in values):
        # The common case, checked without a per-value branch: JSON numbers only (bool is not int here).
        try:
            out = np.array(values, dtype=np.float64)
        except OverflowError:
            pass
        else:
            non_finite(name, out, problems, missing_ok)
            return out
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        out[i] = _one(name, i, v, parse_strings, problems, missing_ok)
    return out


def is_missing(v: Any) -> bool:
    """null, NaN, pandas' NA and NaT: no value."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _one(
    name: str, row: int, v: Any, parse_strings: bool, problems: list, missing_ok: bool = False
) -> float:
    if is_missing(v):
        if not missing_ok:
            problems.append((row, name, "missing value (null or NaN); a finite number is required"))
        return math.nan
    if isinstance(v, bool | np.bool_):
        problems.append((row, name, f"expected a number, got boolean {v!r}"))
        return math.nan
    if isinstance(v, int | float | np.integer | np.floating):
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
    elif parse_strings and isinstance(v, str):
        if not v.strip():  # an empty CSV cell
            if not missing_ok:
                problems.append((row, name, "missing value (empty); a finite number is required"))
            return math.nan
        try:
            x = float(v)
        except ValueError:
            problems.append((row, name, f"expected a number, got text {short(v)}"))
            return math.nan
    else:
        problems.append((row, name, f"expected a number, got {type_name(v)} {short(v)}"))
        return math.nan
    if not math.isfinite(x):
        problems.append((row, name, f"expected a finite number, got {short(v)}"))
    return x


def non_finite(name: str, out: np.ndarray, problems: list, missing_ok: bool = False) -> None:
    bad = np.flatnonzero(np.isinf(out) if missing_ok else ~np.isfinite(out))
    for i in bad:
        what = "missing value (null or NaN)" if math.isnan(out[i]) else f"non-finite value {out[i]}"
        problems.append((int(i), name, f"{what}; a finite number is required"))


def type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def native(v: Any) -> Label:
    v = v.item() if isinstance(v, np.generic) else v
    return v if isinstance(v, int | str) else str(v)
