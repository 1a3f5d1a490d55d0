"""The feature schema stored with every model, and the one validation path for its input.

Online requests (JSON `instances`), V2 tensors and batch files (table columns) all end in
`_to_matrix`, so a value is accepted or refused for the same reason wherever it comes from. A
schema trained from a table with column kinds (bentos.schema.kinds) encodes each column there
(bentos.schema.encode); one from before kinds (version 1) has numeric features only, none missing.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
import pandas as pd

from bentos.errors import InputError
from bentos.schema.cells import Label, column, native, one_value, type_name
from bentos.schema.dense import Dense
from bentos.schema.encode import encode_columns
from bentos.schema.kinds import Column, features, infer
from bentos.schema.tensors import TENSOR as TENSOR
from bentos.schema.tensors import TensorChecks

VERSION = 2
# Unknown categories by column, filled by validation for the doors that count them.
Unknown = dict[str, int]

_NUMBERS = frozenset({float, int})


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
    """A field of an input row: a feature column of the training table."""

    name: str
    dtype: str  # as the training table held it
    min: float | None = None  # numeric columns: the training range
    max: float | None = None
    kind: str = "numeric"
    example: Any = None  # a typical value, for documents and clients


@dataclass(frozen=True)
class FeatureSchema(TensorChecks):
    features: tuple[Feature, ...]  # the fields of an input row, in order
    labels: tuple[Label, ...]
    target: str
    columns: tuple[Column, ...] = ()  # every column but the target, with its kind; () in v1
    dense: Dense | None = None  # the TFLite model's input from the feature matrix
    task: str = "classification"  # or "regression" (bentos.schema.task): then no labels

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @functools.cached_property
    def matrix_names(self) -> list[str]:
        """The feature matrix's columns (a datetime field makes one per part)."""
        return features(self.columns) if self.columns else self.names

    @functools.cached_property
    def plain(self) -> bool:
        """Every field a number and a feature of its own: the matrix is the fields' values."""
        return all(f.kind == "numeric" for f in self.features)

    @functools.cached_property
    def passthrough(self) -> frozenset[str]:
        """Columns of the training table that are not features (identifiers, ignored ones): a
        row may carry them, and they are left out."""
        return frozenset(c.name for c in self.columns if not c.is_feature)

    @property
    def identifiers(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "identifier"]

    @classmethod
    def from_training(
        cls,
        frame: pd.DataFrame,
        labels: Sequence[Any],
        target: str,
        columns: Sequence[Column] | None = None,
        task: str = "classification",
    ) -> FeatureSchema:
        """From the training table's columns (`frame`, without the target) and their kinds
        (inferred from `frame` when not given); a regression's `labels` are empty."""
        if columns is None:
            columns = infer(frame.assign(**{target: 0}), target)
        return cls(
            tuple(_feature(c, frame[c.name]) for c in columns if c.is_feature),
            tuple(native(v) for v in labels),
            str(target),
            tuple(columns),
            task=task,
        )

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def with_dense(self, train_matrix: np.ndarray) -> FeatureSchema:
        """The TFLite input's fill values and indicators, from the training rows only."""
        return replace(self, dense=Dense.fit(self.columns, train_matrix))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            # BentoML's metadata takes no None: a field without a value is left out.
            "features": [
                {k: v for k, v in vars(f).items() if v is not None} for f in self.features
            ],
            "labels": list(self.labels),
            "target": self.target,
        }
        if self.columns:
            data["version"] = VERSION
            data["columns"] = [c.to_dict() for c in self.columns]
        if self.dense is not None:
            data["dense"] = self.dense.to_dict()
        # Only when not the default: a classifier's schema (and its recorded sha256) is as it was
        # before tasks.
        if self.task != "classification":
            data["task"] = self.task
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSchema:
        version = int(data.get("version", 1))
        if version > VERSION:
            raise ValueError(
                f"schema version {version} is newer than this bentos reads ({VERSION}); upgrade it"
            )
        return cls(
            tuple(Feature(**f) for f in data["features"]),
            tuple(data["labels"]),
            str(data["target"]),
            tuple(Column.from_dict(c) for c in data.get("columns", ())),
            Dense.from_dict(data["dense"]) if "dense" in data else None,
            _task(data.get("task", "classification")),
        )

    def differences(self, other: FeatureSchema) -> list[str]:
        """How this schema's input fields differ from `other`'s, as a client sees them: a
        field added, removed, or of another kind. Empty when a client of `other` fits."""
        mine = {f.name: f.kind for f in self.features}
        theirs = {f.name: f.kind for f in other.features}
        out = [f"column {n!r} added" for n in mine if n not in theirs]
        out += [f"column {n!r} removed" for n in theirs if n not in mine]
        out += [
            f"column {n!r} is {mine[n]}, was {theirs[n]}"
            for n in mine
            if n in theirs and mine[n] != theirs[n]
        ]
        return out

    def sha256(self) -> str:
        """Of the canonical JSON: recorded at registration and checked at every load."""
        return schema_sha256(self.to_dict())

    # -- validation ---------------------------------------------------------------------------

    def validate_body(self, body: Any, max_rows: int, unknown: Unknown | None = None) -> np.ndarray:
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
        return self.validate_instances(body["instances"], max_rows, unknown)

    def validate_instances(
        self, instances: Any, max_rows: int, unknown: Unknown | None = None
    ) -> np.ndarray:
        """JSON rows (one object of features per row) to a float64 matrix, or InputError;
        `unknown` gets the count of unknown categories by column."""
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
        matrix = self._fast_matrix(instances) if self.plain else None
        return matrix if matrix is not None else self._careful_matrix(instances, unknown)

    def _careful_matrix(self, instances: list, unknown: Unknown | None) -> np.ndarray:
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
            if row.keys() != wanted and row.keys() - self.passthrough != wanted:
                missing = [n for n in names if n not in row]
                extra = sorted(str(k) for k in row if k not in wanted and k not in self.passthrough)
                problems = [(i, n, "missing feature") for n in missing]
                problems += [(i, k, "unknown feature") for k in extra]
                parts = []
                if missing:
                    parts.append(f"missing feature(s) {', '.join(map(repr, missing))}")
                if extra:
                    parts.append(f"unknown feature(s) {', '.join(map(repr, extra))}")
                raise InputError(
                    f"instances[{i}]: {'; '.join(parts)}; expected exactly: {', '.join(names)}",
                    problems,
                )
        columns = {n: [row[n] for row in instances] for n in names}
        matrix, problems = self._to_matrix(
            columns.__getitem__, len(instances), parse_strings=False, unknown=unknown
        )
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

    def validate_frame(
        self, frame: pd.DataFrame, unknown: Unknown | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
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
        matrix, problems = self._to_matrix(
            frame.__getitem__, len(frame), parse_strings=True, unknown=unknown
        )
        reasons: list[str | None] = [None] * len(frame)
        for row, field, message in problems:
            if reasons[row] is None:
                reasons[row] = f"{field}: {message}"
        return matrix, reasons

    def _to_matrix(
        self,
        values_of: Callable[[str], Any],
        n_rows: int,
        *,
        parse_strings: bool,
        unknown: Unknown | None,
    ) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        """Each field's values (`values_of(name)`) to the feature matrix, with the problems."""
        if not self.plain:
            matrix, problems, found = encode_columns(
                self.columns, values_of, n_rows, parse_strings=parse_strings
            )
            if unknown is not None:
                for name, count in found.items():
                    unknown[name] = unknown.get(name, 0) + count
            return matrix, problems
        matrix = np.empty((n_rows, len(self.features)), dtype=np.float64)
        problems: list[tuple[int, str, str]] = []
        missing_ok = bool(self.columns)  # v1 models never saw a missing value
        for j, feature in enumerate(self.features):
            matrix[:, j] = column(
                feature.name, values_of(feature.name), parse_strings, problems, missing_ok
            )
        problems.sort(key=lambda p: p[0])
        return matrix, problems


def schema_sha256(data: Mapping[str, Any]) -> str:
    """Of a schema as stored (its dict, canonical JSON): what was registered is what is hashed
    at load, whatever fields a later version of this code adds to the dataclasses."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _feature(column: Column, values: pd.Series) -> Feature:
    present = values.dropna()
    dtype = str(values.dtype)
    if column.kind == "numeric":
        numbers = pd.to_numeric(present.astype(str) if dtype in ("object", "str") else present)
        lo, hi = float(numbers.min()), float(numbers.max())
        return Feature(column.name, dtype, lo, hi, "numeric", lo)
    if column.kind == "categorical":
        example = column.levels[0] if column.levels else str(present.iloc[0])
    elif column.kind == "boolean":
        example = bool(native(present.iloc[0])) if dtype == "bool" else str(present.iloc[0])
    else:  # datetime: the earliest, as ISO-8601 text
        example = str(present.min()) if dtype.startswith("datetime") else str(present.iloc[0])
    return Feature(column.name, dtype, None, None, column.kind, example)


def _task(task: Any) -> str:
    from bentos.schema.task import TASKS

    if task not in TASKS:
        raise ValueError(f"schema task {task!r} is not known here ({', '.join(TASKS)})")
    return str(task)
