"""The feature schema stored with every model, and the one validation path for its input.

Online requests (JSON `instances`) and batch files (table columns) both end in `_to_matrix`,
so a value is accepted or refused for the same reason wherever it comes from.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from bentos.errors import InputError

Label = str | int
_NUMBERS = frozenset({float, int})


def parse_json(body: bytes) -> Any:
    """JSON to Python objects: orjson (BENCHMARKS.md, "Choices": orjson), with the standard
    library as the fallback for what orjson refuses (NaN and Infinity literals), so that those reach
    validation and get a message naming the row and field rather than a parse error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    min: float
    max: float


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[Feature, ...]
    labels: tuple[Label, ...]
    target: str

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @classmethod
    def from_training(
        cls, features: pd.DataFrame, labels: Sequence[Any], target: str
    ) -> FeatureSchema:
        cols = tuple(
            Feature(
                str(c), str(features[c].dtype), float(features[c].min()), float(features[c].max())
            )
            for c in features.columns
        )
        return cls(cols, tuple(_native(v) for v in labels), str(target))

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [vars(f) for f in self.features],
            "labels": list(self.labels),
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSchema:
        return cls(
            tuple(Feature(**f) for f in data["features"]),
            tuple(data["labels"]),
            str(data["target"]),
        )

    # -- validation ---------------------------------------------------------------------------

    def validate_instances(self, instances: Any, max_rows: int) -> np.ndarray:
        """JSON rows (one object of features per row) to a float64 matrix, or InputError."""
        if not isinstance(instances, list):
            raise InputError(
                f"'instances' must be a list of objects, got {_type_name(instances)}",
                [(None, "instances", "not a list")],
            )
        if not instances:
            raise InputError(
                "'instances' is empty: send at least one row", [(None, "instances", "empty")]
            )
        if len(instances) > max_rows:
            raise InputError(
                f"'instances' has {len(instances)} rows; at most {max_rows} are allowed per request",
                [(None, "instances", "too many rows")],
            )
        matrix = self._fast_matrix(instances)
        if matrix is not None:
            return matrix
        # Something is off: find what, row by row and then column by column, and say so.
        names = self.names
        wanted = set(names)
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                raise InputError(
                    f"instances[{i}] must be an object of features, got {_type_name(row)}",
                    [(i, None, "not an object")],
                )
            if row.keys() != wanted:
                missing = [n for n in names if n not in row]
                unknown = sorted(str(k) for k in row if k not in wanted)
                problems = [(i, n, "missing feature") for n in missing]
                problems += [(i, k, "unknown feature") for k in unknown]
                parts = []
                if missing:
                    parts.append(f"missing feature(s) {', '.join(map(repr, missing))}")
                if unknown:
                    parts.append(f"unknown feature(s) {', '.join(map(repr, unknown))}")
                raise InputError(
                    f"instances[{i}]: {'; '.join(parts)}; expected exactly: {', '.join(names)}",
                    problems,
                )
        columns = [[row[n] for row in instances] for n in names]
        matrix, problems = self._to_matrix(columns, len(instances), parse_strings=False)
        if problems:
            row, field, message = problems[0]
            raise InputError(f"instances[{row}].{field}: {message}", problems)
        return matrix

    @functools.cached_property
    def _take(self) -> Callable[[Any], tuple]:
        """A row's values in schema order, in C (KeyError for a missing feature)."""
        names = self.names
        if len(names) == 1:  # itemgetter of one key gives the value, not a 1-tuple
            return functools.partial(_one_value, names[0])
        return operator.itemgetter(*names)

    def _fast_matrix(self, instances: list) -> np.ndarray | None:
        """The common case without a Python loop per value: every row an object with exactly
        the schema's features, every value a JSON number, every number finite. None when
        anything is off; the careful path then says what (BENCHMARKS.md, "Choices": one-pass
        validation)."""
        n, take = len(self.features), self._take
        try:
            rows = [take(row) for row in instances if len(row) == n]
        except (KeyError, TypeError):
            return None
        if len(rows) != len(instances):
            return None
        if not set(map(type, itertools.chain.from_iterable(rows))) <= _NUMBERS:
            return None  # bool is not int here: `true` is not a number
        try:
            flat = itertools.chain.from_iterable(rows)
            matrix = np.fromiter(flat, dtype=np.float64, count=len(rows) * n)
        except OverflowError:
            return None
        return matrix.reshape(len(rows), n) if np.isfinite(matrix).all() else None

    def validate_matrix(self, x: np.ndarray) -> np.ndarray:
        """A numeric matrix already in schema order (V2 tensors): only finiteness is left."""
        x = np.asarray(x, dtype=np.float64)
        if np.isfinite(x).all():
            return x
        problems: list[tuple[int, str, str]] = []
        for j, feature in enumerate(self.features):
            _non_finite(feature.name, x[:, j], problems)
        problems.sort(key=lambda p: p[0])
        row, field, message = problems[0]
        raise InputError(
            f"row {row}, feature {field!r} ({self.names.index(field)}): {message}", problems
        )

    def validate_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str | None]]:
        """Table rows to (matrix, reason per row); rows with a reason are not to be predicted.

        A missing column refuses the whole table; columns beyond the schema (ids, the target)
        are ignored. Text cells are parsed as numbers, since CSV has no other way to carry them.
        """
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise InputError(
                f"missing column(s) {', '.join(map(repr, missing))}; the model needs: {', '.join(self.names)}",
                [(None, n, "missing column") for n in missing],
            )
        columns = [frame[n] for n in self.names]
        matrix, problems = self._to_matrix(columns, len(frame), parse_strings=True)
        reasons: list[str | None] = [None] * len(frame)
        for row, field, message in problems:
            if reasons[row] is None:
                reasons[row] = f"{field}: {message}"
        return matrix, reasons

    def _to_matrix(
        self, columns: Sequence[Any], n_rows: int, *, parse_strings: bool
    ) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        matrix = np.empty((n_rows, len(columns)), dtype=np.float64)
        problems: list[tuple[int, str, str]] = []
        for j, (feature, values) in enumerate(zip(self.features, columns, strict=True)):
            matrix[:, j] = _column(feature.name, values, parse_strings, problems)
        problems.sort(key=lambda p: p[0])
        return matrix, problems


def _one_value(name: str, row: Any) -> tuple:
    return (row[name],)


def _column(name: str, values: Any, parse_strings: bool, problems: list) -> np.ndarray:
    if isinstance(values, pd.Series):
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out = values.to_numpy(dtype=np.float64, na_value=np.nan)
            _non_finite(name, out, problems)
            return out
        if parse_strings and pd.api.types.is_string_dtype(values):
            # Text columns (CSV read as text): parse in C, then explain only the failures.
            out = np.array(pd.to_numeric(values, errors="coerce"), dtype=np.float64)
            raw = values.to_numpy(dtype=object)
            for i in np.flatnonzero(~np.isfinite(out)):
                out[i] = _one(name, int(i), raw[i], parse_strings, problems)
            return out
        values = values.to_numpy(dtype=object)
    elif all(type(v) is float or type(v) is int for v in values):
        # The common case, checked without a per-value branch: JSON numbers only (bool is not int here).
        try:
            out = np.array(values, dtype=np.float64)
        except OverflowError:
            pass
        else:
            _non_finite(name, out, problems)
            return out
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        out[i] = _one(name, i, v, parse_strings, problems)
    return out


def _one(name: str, row: int, v: Any, parse_strings: bool, problems: list) -> float:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
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
            problems.append((row, name, "missing value (empty); a finite number is required"))
            return math.nan
        try:
            x = float(v)
        except ValueError:
            problems.append((row, name, f"expected a number, got text {_short(v)}"))
            return math.nan
    else:
        problems.append((row, name, f"expected a number, got {_type_name(v)} {_short(v)}"))
        return math.nan
    if not math.isfinite(x):
        problems.append((row, name, f"expected a finite number, got {_short(v)}"))
    return x


def _non_finite(name: str, out: np.ndarray, problems: list) -> None:
    bad = np.flatnonzero(~np.isfinite(out))
    for i in bad:
        what = "missing value (null or NaN)" if math.isnan(out[i]) else f"non-finite value {out[i]}"
        problems.append((int(i), name, f"{what}; a finite number is required"))


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _native(v: Any) -> Label:
    v = v.item() if isinstance(v, np.generic) else v
    return v if isinstance(v, int | str) else str(v)
