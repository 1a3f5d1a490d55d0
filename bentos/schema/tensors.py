"""Open Inference Protocol tensors to the feature matrix: the schema's checks for V2 REST and
gRPC (bentos.serving.v2 decodes the tensors). One tensor per column of the table, as MLServer's
pandas codec sends a DataFrame; or, for a model whose features are all numbers, the one FP32
tensor `features` ([N, n_features]) that tritonclient and KServe's SDK send.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bentos.errors import InputError
from bentos.schema.cells import non_finite

if TYPE_CHECKING:
    from bentos.schema import FeatureSchema

# The one input tensor of an all-numeric model: [N, n_features], FP32.
TENSOR = "features"


class TensorChecks:
    """FeatureSchema's V2 methods."""

    def validate_tensors(
        self: FeatureSchema, tensors: Sequence[Any], max_rows: int, unknown: dict | None = None
    ) -> np.ndarray:
        """Decoded input tensors (name, datatype, shape, flat data) to the feature matrix."""
        if len(tensors) == 1 and tensors[0].name == TENSOR and TENSOR not in self.names:
            t = tensors[0]
            return self.validate_tensor(t.name, t.datatype, t.shape, t.data, max_rows)
        return self._columns(tensors, max_rows, unknown)

    def _columns(
        self: FeatureSchema, tensors: Sequence[Any], max_rows: int, unknown: dict | None
    ) -> np.ndarray:
        wanted = self.names
        given = [t.name for t in tensors]
        if self.plain and not set(given) & set(wanted):
            # Not a column among them: a client of the one `features` tensor.
            what = (
                f"the request has {len(given)} inputs; the model takes one, {TENSOR!r}"
                if len(given) != 1
                else f"unknown input tensor {given[0]!r}; the model takes one input, {TENSOR!r}"
            )
            raise InputError(
                f"{what} (FP32 [N, {len(wanted)}]), or one per column: {', '.join(wanted)}",
                [(None, n, "unknown input") for n in given] or [(None, "inputs", "count")],
            )
        dupes = sorted({n for n in given if given.count(n) > 1})
        missing = [n for n in wanted if n not in given]
        extra = sorted(n for n in set(given) - set(wanted) - self.passthrough - set(dupes))
        if dupes or missing or extra:
            parts = [f"input(s) {', '.join(map(repr, dupes))} given twice"] if dupes else []
            if missing:
                parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unknown input(s) {', '.join(map(repr, extra))}")
            one = f", or the one tensor {TENSOR!r}" if self.plain else ""
            raise InputError(
                f"{'; '.join(parts)}; the model takes one input per column: "
                f"{', '.join(wanted)}{one}",
                [(None, n, "missing input") for n in missing]
                + [(None, n, "unknown input") for n in extra + dupes],
            )
        data, rows = {}, None
        for t in tensors:
            if t.name not in wanted:
                continue
            shape = list(t.shape)
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
                raise InputError(
                    f"input {t.name!r} has shape {shape}; [N] or [N, 1] is required, N >= 1",
                    [(None, t.name, "shape")],
                )
            if rows is not None and shape[0] != rows:
                raise InputError(
                    f"input {t.name!r} has {shape[0]} rows, the other inputs {rows}; "
                    "every column needs the same rows",
                    [(None, t.name, "shape")],
                )
            rows = shape[0]
            if rows > max_rows:
                raise InputError(
                    f"input {t.name!r} has {rows} rows; at most {max_rows} are allowed",
                    [(None, t.name, "too many rows")],
                )
            if t.data.size != rows:
                raise InputError(
                    f"input {t.name!r} has {t.data.size} values; shape {shape} needs {rows}",
                    [(None, t.name, "size")],
                )
            # Numbers as a column of floats (NaN: missing); text and nulls as they came.
            values = t.data
            data[t.name] = pd.Series(values) if values.dtype.kind in "biuf" else list(values)
        assert rows is not None
        matrix, problems = self._to_matrix(
            data.__getitem__, rows, parse_strings=True, unknown=unknown
        )
        if problems:
            row, field, message = problems[0]
            raise InputError(f"input {field!r}, row {row}: {message}", problems)
        return matrix

    def validate_tensor(
        self: FeatureSchema,
        name: str,
        datatype: str,
        shape: Sequence[int],
        data: np.ndarray,
        max_rows: int,
    ) -> np.ndarray:
        """An Open Inference Protocol input tensor (flat `data`) to the model's float matrix."""
        n_features = len(self.features)
        if not self.plain:
            raise InputError(
                f"input {name!r}: this model has text, boolean or date columns and takes one "
                f"input tensor per column ({', '.join(self.names)}), not {TENSOR!r}",
                [(None, name, "unknown input")],
            )
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

    def validate_matrix(self: FeatureSchema, x: np.ndarray) -> np.ndarray:
        """A numeric matrix already in schema order (V2 tensors): only finiteness is left (NaN
        is a missing value where the schema has kinds)."""
        x = np.asarray(x, dtype=np.float64)
        missing_ok = bool(self.columns)
        if np.isfinite(x).all() or (missing_ok and not np.isinf(x).any()):
            return x
        problems: list[tuple[int, str, str]] = []
        for j, feature in enumerate(self.features):
            non_finite(feature.name, x[:, j], problems, missing_ok)
        problems.sort(key=lambda p: p[0])
        row, field, message = problems[0]
        raise InputError(
            f"row {row}, feature {field!r} ({self.names.index(field)}): {message}", problems
        )
