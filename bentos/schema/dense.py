"""The TFLite model's input, from the feature matrix every door builds (bentos.schema.encode):
a network takes neither missing values nor category codes as numbers, so each missing value is
filled from the training rows (the median; the most frequent value for booleans and
categories), each feature that had missing values in training gets a 0/1 indicator beside it,
each categorical code becomes one-hot over its levels and "other", and every input is then
standardized with the training rows' mean and spread. Standardizing here, in float64, rather
than only in the network keeps a column of large numbers (a salary, an income) within what
float16 constants hold: a mean of 113,706 is infinite in float16. Numpy only, so that the edge
example applies the same steps from model.json (bentos export-edge).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bentos.schema.kinds import Column


@dataclass(frozen=True)
class Dense:
    features: tuple[str, ...]  # the feature matrix's columns
    fill: tuple[float, ...]  # per feature: what a missing value becomes
    indicators: tuple[int, ...]  # features that get a missing-value indicator
    onehot: tuple[int, ...]  # per feature: 0, or the number of one-hot columns (levels + other)
    center: tuple[float, ...] = ()  # per network input: the training mean (none: 0)
    scale: tuple[float, ...] = ()  # per network input: the training spread (none: 1)

    @classmethod
    def fit(cls, columns: Sequence[Column], matrix: np.ndarray) -> Dense:
        """From the training rows' feature matrix (NaN where missing)."""
        names, fill, indicators, onehot = [], [], [], []
        j = 0
        for column in columns:
            for name in column.features:
                values = matrix[:, j]
                present = values[~np.isnan(values)]
                if column.kind in ("boolean", "categorical"):
                    found, counts = np.unique(present, return_counts=True)
                    fill.append(float(found[np.argmax(counts)]) if len(found) else 0.0)
                else:
                    fill.append(float(np.median(present)) if len(present) else 0.0)
                if len(present) < len(values):
                    indicators.append(j)
                onehot.append(len(column.levels) + 1 if column.kind == "categorical" else 0)
                names.append(name)
                j += 1
        plain = cls(tuple(names), tuple(fill), tuple(indicators), tuple(onehot))
        inputs = plain.apply(matrix).astype(np.float64)
        spread = inputs.std(axis=0)
        spread[spread == 0] = 1.0  # constant in training: left as it is
        return replace(plain, center=tuple(inputs.mean(axis=0)), scale=tuple(spread))

    @property
    def names(self) -> list[str]:
        """The network's inputs, in order."""
        out = []
        for j, name in enumerate(self.features):
            if self.onehot[j]:
                out += [f"{name}={k}" for k in range(self.onehot[j])]
            else:
                out.append(name)
            if j in self.indicators:
                out.append(f"{name}.missing")
        return out

    @property
    def trivial(self) -> bool:
        """No filling, indicators or one-hot: every feature numeric and never missing in
        training."""
        return not self.indicators and not any(self.onehot)

    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """The feature matrix ([N, features], NaN where missing) to the network's float32 input."""
        out = matrix if self.trivial and not np.isnan(matrix).any() else self._expand(matrix)
        if self.center:
            center, scale = self._standard
            out = (out - center) / scale
        return out.astype(np.float32)

    @functools.cached_property
    def _standard(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.center), np.asarray(self.scale)

    def _expand(self, matrix: np.ndarray) -> np.ndarray:
        parts = []
        for j in range(len(self.features)):
            values = matrix[:, j]
            missing = np.isnan(values)
            filled = np.where(missing, self.fill[j], values)
            if self.onehot[j]:
                codes = np.clip(filled.astype(np.int64), 0, self.onehot[j] - 1)
                parts.append(np.eye(self.onehot[j], dtype=np.float32)[codes])
            else:
                parts.append(filled.reshape(-1, 1))
            if j in self.indicators:
                parts.append(missing.reshape(-1, 1))
        return np.hstack(parts).astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "fill": list(self.fill),
            "indicators": list(self.indicators),
            "onehot": list(self.onehot),
            **({"center": list(self.center), "scale": list(self.scale)} if self.center else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dense:
        return cls(
            tuple(map(str, data["features"])),
            tuple(map(float, data["fill"])),
            tuple(map(int, data["indicators"])),
            tuple(map(int, data["onehot"])),
            tuple(map(float, data.get("center", ()))),
            tuple(map(float, data.get("scale", ()))),
        )
