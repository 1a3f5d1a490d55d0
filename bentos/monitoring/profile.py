"""The reference profile saved with each model at training (`reference.json`): what the training
rows' features and the model's hold-out predictions looked like, so that a window of served rows
can be compared with them later (bentos.monitoring.drift) without the training table.

Per feature of the matrix: its missing share, and for numbers quantile bins with their shares
plus a bounded random sample (for the Kolmogorov-Smirnov test); for categories (and booleans)
the share of each. It stays small: at most SAMPLE_BUDGET sampled values over all features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bentos.schema import FeatureSchema

FORMAT = 1
BINS = 10  # quantile bins of a numeric feature (fewer when its values repeat)
SAMPLE = 1000  # sampled values of a numeric feature, at most
# Sampled values over all numeric features, at most: about 11 bytes each in JSON (6 significant
# digits), so 100 numeric features still make a reference.json of about 200 KB.
SAMPLE_BUDGET = 15_000
_DIGITS = 6
BOOLEAN = ("false", "true")
OTHER = "other"


@dataclass(frozen=True)
class Spec:
    """A column of the feature matrix as monitoring sees it."""

    name: str
    kind: str  # "numeric" (numbers, date parts) or "categorical" (categories, booleans)
    categories: tuple[str, ...] = ()  # categorical: the name of each code, in code order
    unseen: bool = False  # the last category is "other": values training never saw (or rarely)


def feature_specs(schema: FeatureSchema) -> list[Spec]:
    """One per column of the schema's feature matrix, in its order."""
    if not schema.columns:  # version 1: numbers only, one feature per field
        return [Spec(name, "numeric") for name in schema.names]
    specs: list[Spec] = []
    for column in schema.columns:
        if column.kind == "categorical":
            # The matrix holds the level's code; len(levels) is "other".
            specs.append(Spec(column.name, "categorical", (*column.levels, OTHER), True))
        elif column.kind == "boolean":
            specs.append(Spec(column.name, "categorical", BOOLEAN))
        else:
            specs.extend(Spec(name, "numeric") for name in column.features)
    if [s.name for s in specs] != list(schema.matrix_names):
        raise ValueError("the schema's columns do not make its feature matrix")
    return specs


def check_matrix(specs: list[Spec], matrix: np.ndarray) -> np.ndarray:
    """The matrix as float64 [rows, features], or ValueError when it is not the schema's."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(specs):
        raise ValueError(
            f"the feature matrix has shape {matrix.shape}; the schema makes {len(specs)} features"
        )
    return matrix


def category_counts(codes: np.ndarray, k: int) -> np.ndarray:
    """How many of the (non-missing) codes fall in each of k categories. A code past the last
    one counts as the last: the encoder never makes one, and "other" is what it would mean."""
    clipped = np.clip(codes.astype(np.int64), 0, k - 1)
    return np.bincount(clipped, minlength=k)


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """How many values fall in each bin between the interior `edges` (len(edges) + 1 bins, the
    outer ones open): the bins of the training quantiles, for training and served rows alike."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(index, minlength=len(edges) + 1)


def present(values: np.ndarray) -> np.ndarray:
    """The values that are there: NaN is a missing value (validation lets no infinity through,
    and one would break the quantiles, so it counts as missing too)."""
    return values[np.isfinite(values)]


def reference_profile(
    schema: FeatureSchema, matrix: np.ndarray, predicted: np.ndarray, *, seed: int = 0
) -> dict[str, Any]:
    """The profile of the training rows' feature `matrix` (as schema.validate_frame makes it)
    and of the model's `predicted` label indices on the hold-out rows, as plain JSON values."""
    specs = feature_specs(schema)
    matrix = check_matrix(specs, matrix)
    rows = len(matrix)
    rng = np.random.default_rng(seed)
    numeric = sum(s.kind == "numeric" for s in specs)
    sample = min(SAMPLE, SAMPLE_BUDGET // max(numeric, 1))
    features: dict[str, dict[str, Any]] = {}
    for j, spec in enumerate(specs):
        values = present(matrix[:, j])
        entry: dict[str, Any] = {
            "kind": spec.kind,
            "count": len(values),
            "missing": 1 - len(values) / rows if rows else 0.0,
        }
        if spec.kind == "numeric":
            entry.update(_numeric(values, rng, sample))
        else:
            counts = category_counts(values, len(spec.categories))
            shares = _shares(counts)
            entry.update(categories=list(spec.categories), shares=shares)
            if spec.unseen:
                entry["unseen"] = shares[-1]
        features[spec.name] = entry
    return {
        "format": FORMAT,
        "rows": rows,
        "features": features,
        "prediction": prediction_profile(schema, predicted, rng),
    }


def prediction_profile(
    schema: FeatureSchema, predicted: np.ndarray, rng: np.random.Generator | None = None
) -> dict[str, Any]:
    """The model's answers on the hold-out rows: label shares, or a regression's numbers as
    a numeric feature's are summarized (`kind` numeric)."""
    if schema.regression:
        values = np.asarray(predicted, np.float64).reshape(-1)
        rng = rng or np.random.default_rng(0)
        summary = _numeric(values, rng, SAMPLE)
        return {"kind": "numeric", "rows": len(values), "count": len(values), **summary}
    labels = list(schema.labels)
    codes = label_codes(predicted, len(labels))
    return {
        "labels": labels,
        "shares": _shares(np.bincount(codes, minlength=len(labels))),
        "rows": len(codes),
    }


def label_codes(predicted: np.ndarray, k: int) -> np.ndarray:
    """Predicted label indices as integers, or ValueError naming one that is not a label's."""
    codes = np.asarray(predicted).reshape(-1)
    with np.errstate(invalid="ignore"):  # NaN to an integer: caught just below
        whole = codes.astype(np.int64)
    # NaN or a fraction differs from its integer; a negative index or one past the labels too.
    if codes.size and (np.any(whole != codes) or whole.min() < 0 or whole.max() >= k):
        raise ValueError(f"predicted must hold label indices, integers from 0 to {k - 1}")
    return whole


def _numeric(values: np.ndarray, rng: np.random.Generator, sample: int) -> dict[str, Any]:
    if not len(values):
        return {"edges": [], "shares": [0.0], "mean": None, "std": None, "sample": []}
    # Interior edges at the training quantiles; repeated values (a few distinct numbers, a
    # heavy zero) merge bins rather than leave empty ones.
    quantiles = np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1])
    edges = [float(e) for e in np.unique(quantiles)]
    picked = rng.choice(values, size=min(sample, len(values)), replace=False)
    return {
        "edges": edges,
        "shares": _shares(bin_counts(values, edges)),
        "mean": float(values.mean()),
        "std": float(values.std()),
        # Rounded: a KS test does not notice the 7th digit, and the JSON is half the size.
        "sample": [float(f"{v:.{_DIGITS}g}") for v in np.sort(picked)],
    }


def significant(values: np.ndarray) -> np.ndarray:
    """`values` rounded to the sample's significant digits (_DIGITS), vectorized: the same
    function on both sides of a comparison gives the same float for the same rounded number,
    whichever side was rounded before."""
    values = np.asarray(values, dtype=np.float64)
    nonzero = values != 0
    magnitude = np.floor(np.log10(np.abs(np.where(nonzero, values, 1.0))))
    factor = 10.0 ** (_DIGITS - 1 - magnitude)
    return np.where(nonzero, np.round(values * factor) / factor, 0.0)


def _shares(counts: np.ndarray) -> list[float]:
    total = int(counts.sum())
    return [float(c) / total if total else 0.0 for c in counts]
