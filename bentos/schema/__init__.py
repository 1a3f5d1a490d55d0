"""The feature schema stored with every model, and the one validation path for its input.

Online requests (JSON `instances`) and batch files (table columns) both end in `_to_matrix`,
so a value is accepted or refused for the same reason wherever it comes from.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from bentos.errors import InputError
from bentos.schema.cells import Label, column, native, non_finite, one_value, type_name

_NUMBERS = frozenset({float, int})
# The one input tensor of both models in the Open Inference Protocol: [N, n_features], FP32.
TENSOR = "features"


def parse_json(body: bytes) -> Any:
    """JSON to Python objects, or an InputError (a 400) saying why not.

    orjson first (BENCHMARKS.md, "Choices": orjson). The standard library reads what orjson
    refuses, so that NaN, Infinity and numbers too large for a double reach validation and get a
    message naming the row and field; its recursion on nesting deeper than it allows is caught
    and refused like any malformed JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise InputError(
            "malformed JSON: nested too deeply", [(None, None, "malformed JSON")]
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"malformed JSON: {exc}", [(None, None, "malformed JSON")]) from None


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
        return cls(cols, tuple(native(v) for v in labels), str(target))

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

    def validate_body(self, body: Any, max_rows: int) -> np.ndarray:
        """A JSON API body, {"instances": [{feature: value, ...}, ...]}, to a float64 matrix."""
        if not isinstance(body, dict) or "instances" not in body:
            raise InputError(
                'the body must be a JSON object {"instances": [{feature: value, ...}, ...]}',
                [(None, "instances", "missing")],
            )
        if len(body) != 1:
            unknown = sorted(str(k) for k in body if k != "instances")
            raise InputError(
                f"unknown top-level field(s) {', '.join(map(repr, unknown))}; only 'instances' is allowed",
                [(None, k, "unknown field") for k in unknown],
            )
        return self.validate_instances(body["instances"], max_rows)

    def validate_tensor(
        self, name: str, datatype: str, shape: Sequence[int], data: np.ndarray, max_rows: int
    ) -> np.ndarray:
        """An Open Inference Protocol input tensor (flat `data`) to the model's float matrix."""
        n_features = len(self.features)
        if name != TENSOR:
            raise InputError(
                f"unknown input tensor {name!r}; the model takes one input, {TENSOR!r}",
                [(None, name, "unknown input")],
            )
        if datatype != "FP32":
            raise InputError(
                f"input {TENSOR!r} has datatype {datatype}; FP32 is required",
                [(None, TENSOR, "datatype")],
            )
        if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
            raise InputError(
                f"input {TENSOR!r} has shape {list(shape)}; [N, {n_features}] is required, N >= 1, "
                f"features in this order: {', '.join(self.names)}",
                [(None, TENSOR, "shape")],
            )
        if shape[0] > max_rows:
            raise InputError(
                f"input {TENSOR!r} has {shape[0]} rows; at most {max_rows} are allowed",
                [(None, TENSOR, "too many rows")],
            )
        if data.size != shape[0] * shape[1]:
            raise InputError(
                f"input {TENSOR!r} has {data.size} values; shape {list(shape)} needs {shape[0] * shape[1]}",
                [(None, TENSOR, "size")],
            )
        try:
            return self.validate_matrix(data.reshape(shape[0], shape[1]))
        except InputError as exc:
            raise InputError(f"input {TENSOR!r}: {exc.message}", exc.problems) from None

    def validate_instances(self, instances: Any, max_rows: int) -> np.ndarray:
        """JSON rows (one object of features per row) to a float64 matrix, or InputError."""
        if not isinstance(instances, list):
            raise InputError(
                f"'instances' must be a list of objects, got {type_name(instances)}",
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
        return matrix if matrix is not None else self._careful_matrix(instances)

    def _careful_matrix(self, instances: list) -> np.ndarray:
        """Rows checked one by one, then columns value by value: the path that says what is off
        (the row and field) for every body the fast path declines. Every 400 comes from here."""
        names = self.names
        wanted = set(names)
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                raise InputError(
                    f"instances[{i}] must be an object of features, got {type_name(row)}",
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
            return functools.partial(one_value, names[0])
        return operator.itemgetter(*names)

    def _fast_matrix(self, instances: list) -> np.ndarray | None:
        """The common case without a Python loop per value: every row an object with exactly
        the schema's features, every value a JSON number, every number finite. None when
        anything is off, and the careful path then says what, so this path never decides a
        message (BENCHMARKS.md, "Choices": 64-row requests)."""
        n = len(self.features)
        try:
            # n keys, all n names among them: exactly the schema's features. len() of a number
            # or null raises TypeError; itemgetter on a list or a string of n items, too.
            if set(map(len, instances)) != {n}:
                return None
            rows = list(map(self._take, instances))
        except (KeyError, TypeError):
            return None
        flat = itertools.chain.from_iterable
        if not set(map(type, flat(rows))) <= _NUMBERS:
            return None  # bool is not int here: `true` is not a number
        try:
            matrix = np.fromiter(flat(rows), dtype=np.float64, count=len(rows) * n)
        except OverflowError:  # an integer beyond a double's range: the careful path says so
            return None
        return matrix.reshape(len(rows), n) if np.isfinite(matrix).all() else None

    def validate_matrix(self, x: np.ndarray) -> np.ndarray:
        """A numeric matrix already in schema order (V2 tensors): only finiteness is left."""
        x = np.asarray(x, dtype=np.float64)
        if np.isfinite(x).all():
            return x
        problems: list[tuple[int, str, str]] = []
        for j, feature in enumerate(self.features):
            non_finite(feature.name, x[:, j], problems)
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
            matrix[:, j] = column(feature.name, values, parse_strings, problems)
        problems.sort(key=lambda p: p[0])
        return matrix, problems
