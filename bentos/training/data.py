"""Training data: the bundled datasets and user tables (CSV or Parquet, any fsspec URL)."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from bentos.errors import DataError
from bentos.schema.kinds import Column, Overrides, infer
from bentos.schema.task import infer_task

DATASETS = ("iris", "synthetic", "diabetes")


@dataclass(frozen=True)
class Dataset:
    features: pd.DataFrame  # every column but the target, as read
    target: pd.Series
    source: str  # where it came from, for the model's metadata
    sha256: str  # of the file bytes, or of the canonical table for bundled data
    columns: tuple[Column, ...] = ()  # the kind of each column of `features`
    task: str = "classification"  # bentos.schema.task
    task_why: str = ""


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name.replace(" (cm)", "")).strip("_").lower()


def _table_sha256(frame: pd.DataFrame) -> str:
    # Bundled data has no file: hash a canonical CSV rendering instead, so the figure is
    # stable across pandas versions that change in-memory layouts.
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def load_builtin(name: str, overrides: Overrides | None = None, task: str | None = None) -> Dataset:
    """The bundled datasets: all ship with scikit-learn and need no network. diabetes (a
    disease's progression a year on, from ten measurements) is a regression."""
    if name == "iris":
        from sklearn.datasets import load_iris

        iris = load_iris()
        features = pd.DataFrame(iris.data, columns=[_snake(n) for n in iris.feature_names])
        target = pd.Series(np.asarray(iris.target_names)[iris.target], name="species")
    elif name == "synthetic":
        from sklearn.datasets import make_classification

        # The benchmark workload used across the project; keep these arguments exact.
        x, y = make_classification(
            n_samples=20000, n_features=20, n_informative=10, n_classes=3, random_state=0
        )
        features = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
        target = pd.Series(y, name="label")
    elif name == "diabetes":
        from sklearn.datasets import load_diabetes

        diabetes = load_diabetes(as_frame=True)
        features = diabetes.data
        target = diabetes.target.rename("progression")
    else:
        raise DataError(f"unknown dataset {name!r}: allowed are {', '.join(DATASETS)}")
    table = features.assign(**{str(target.name): target})
    columns = tuple(infer(table, str(target.name), overrides))
    kind, why = infer_task(target, task)
    return Dataset(features, target, f"builtin:{name}", _table_sha256(table), columns, kind, why)


def read_table(url: str) -> tuple[pd.DataFrame, str]:
    import fsspec

    suffixes = PurePosixPath(url.split("?", 1)[0]).suffixes
    try:
        with fsspec.open(url, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{url}: no such file") from None
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"{url}: cannot be opened ({exc})") from None
    if not raw.strip():
        raise DataError(f"{url}: the file is empty")
    digest = hashlib.sha256(raw).hexdigest()

    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            frame = pd.read_csv(io.BytesIO(raw))
    except Exception as exc:  # a parser's own error type varies by format and engine
        raise DataError(
            f"{url}: cannot be read as {'Parquet' if '.parquet' in suffixes else 'CSV'}: {exc}"
        ) from None
    if frame.empty:
        raise DataError(f"{url}: the file has no data rows")
    return frame, digest


def load_table(
    url: str, target: str, overrides: Overrides | None = None, task: str | None = None
) -> Dataset:
    """Read a user's table and check it can train a model for its task (inferred from the
    target, or `task`); DataError names what is wrong.

    Every column but the target gets a kind (bentos.schema.kinds): inferred, or as `overrides`
    name it."""
    frame, digest = read_table(url)
    frame.columns = [str(c) for c in frame.columns]
    if target not in frame.columns:
        raise DataError(
            f"{url}: target column {target!r} not found; the columns are {', '.join(frame.columns)}"
        )
    y = frame[target]
    kind, why = infer_task(y, task)
    if kind == "regression":
        from bentos.schema.task import regression_target

        regression_target(y, url)  # a DataError naming the column and row when not a number
    elif y.isna().any():
        raise DataError(
            f"{url}: target column {target!r} has {int(y.isna().sum())} missing values; "
            "drop those rows or fill them"
        )
    if y.nunique() < 2:
        raise DataError(
            f"{url}: target column {target!r} has a single class ({y.iloc[0]!r}); a classifier needs at least two"
        )
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{url}: no feature columns besides the target {target!r}")
    try:
        columns = tuple(infer(frame, target, overrides))
    except DataError as exc:
        raise DataError(f"{url}: {exc}") from None
    return Dataset(features, y, url, digest, columns, kind, why)
