"""The training pipeline: data, split, both models, gates, then registration of both or neither."""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bentos import data as data_mod
from bentos.schema import FeatureSchema


class GateError(RuntimeError):
    """A model missed a quality gate; nothing was registered."""


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "iris"
    data: str | None = None
    target: str | None = None
    quantize: str = "dynamic"
    min_accuracy: float = 0.7
    seed: int = 42
    n_estimators: int = 100
    test_size: float = 0.2
    epochs: int | None = None  # None: chosen from the table's size


@dataclass
class TrainResult:
    rf_tag: str
    tflite_tag: str
    rf_metrics: dict[str, Any]
    tflite_metrics: dict[str, Any]
    parity: dict[str, float]
    tflite_size: int
    float32_size: int
    rf_size: int
    seconds: dict[str, float] = field(default_factory=dict)


Step = Callable[[str], Any]  # a context manager factory that shows a slow step to people


@contextmanager
def _quiet(_: str) -> Iterator[None]:
    yield


def load(config: TrainConfig) -> data_mod.Dataset:
    if config.data:
        if not config.target:
            raise data_mod.DataError("--data needs --target, the name of the label column")
        return data_mod.load_table(config.data, config.target)
    return data_mod.load_builtin(config.dataset)


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[Any, ...]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    report = classification_report(
        y_true,
        y_pred,
        labels=list(range(len(labels))),
        target_names=[str(v) for v in labels],
        output_dict=True,
        zero_division=0,
    )
    per_class = {str(name): {k: float(v) for k, v in report[str(name)].items()} for name in labels}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
        "per_class": per_class,
        "n_test": len(y_true),
    }


def train(config: TrainConfig, step: Step = _quiet) -> TrainResult:
    """Run the whole pipeline. DataError, GateError or ConversionError leave the store as it was."""
    import joblib
    import sklearn
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    from bentos import conversion, models

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with step("Loading data"):
        ds = load(config)
    labels, y = np.unique(ds.target.to_numpy(), return_inverse=True)
    schema = FeatureSchema.from_training(ds.features, labels, str(ds.target.name))
    x = ds.features.to_numpy(dtype=np.float64)
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=config.test_size, stratify=y, random_state=config.seed
        )
    except ValueError as exc:  # e.g. a class with one row cannot be stratified
        raise data_mod.DataError(
            f"{ds.source}: target column {schema.target!r} cannot be split for a hold-out set: {exc}"
        ) from None
    seconds["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with step(f"Training RandomForest ({config.n_estimators} trees)"):
        params = {"n_estimators": config.n_estimators, "random_state": config.seed, "n_jobs": -1}
        forest = RandomForestClassifier(**params).fit(x_train, y_train)
        rf_metrics = evaluate(y_test, forest.predict(x_test), schema.labels)
        forest.n_jobs = 1  # serve-time setting: one request, one core
    seconds["rf"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    epochs = config.epochs or conversion.default_epochs(len(x_train))
    with step(f"Training Keras MLP ({epochs} epochs)"):
        keras_model = conversion.train_keras(
            x_train, y_train, len(labels), seed=config.seed, epochs=epochs
        )
    with step(f"Converting to TFLite ({config.quantize})"):
        content = conversion.convert(keras_model, config.quantize, x_train)
        f32_size = conversion.float32_size(keras_model)
        par = conversion.parity(keras_model, content, x_test, y_test)
        lite = conversion.TFLiteRunner.from_bytes(content)
        tflite_metrics = evaluate(y_test, lite.predict_proba(x_test).argmax(1), schema.labels)
    seconds["tflite"] = time.perf_counter() - t0

    gate_failures = []
    if rf_metrics["accuracy"] < config.min_accuracy:
        gate_failures.append(
            f"RandomForest accuracy {rf_metrics['accuracy']:.4f} < --min-accuracy {config.min_accuracy}"
        )
    if tflite_metrics["accuracy"] < config.min_accuracy:
        gate_failures.append(
            f"TFLite accuracy {tflite_metrics['accuracy']:.4f} < --min-accuracy {config.min_accuracy}"
        )
    gate_failures += [f"TFLite parity: {f}" for f in par.failures(config.quantize)]
    if gate_failures:
        raise GateError("; ".join(gate_failures) + "; nothing was registered")

    common = {
        "schema": schema.to_dict(),
        "training_data": {"source": ds.source, "sha256": ds.sha256, "rows": len(x)},
        "split": {"test_size": config.test_size, "seed": config.seed, "stratified": True},
        "python": platform.python_version(),
    }
    with step("Registering models"), tempfile.TemporaryDirectory() as tmp:
        # Persisted with joblib (as the classic tutorial does); the store's copy is checked
        # against this file's hash, which is what every later load verifies.
        pkl = Path(tmp) / models.RF_FILE
        joblib.dump(forest, pkl)
        rf = models.register_rf(
            forest,
            {
                **common,
                "metrics": rf_metrics,
                "sklearn_version": sklearn.__version__,
                "params": {**params, "n_jobs_serving": 1},
                "size_bytes": pkl.stat().st_size,
            },
            pkl,
        )
        import tensorflow as tf

        tfl = models.register_tflite(
            content,
            {
                **common,
                "metrics": tflite_metrics,
                "quantization": config.quantize,
                "size_bytes": len(content),
                "float32_size_bytes": f32_size,
                "parity": par.to_dict(),
                "tensorflow_version": tf.__version__,
                "params": {"epochs": epochs, "hidden": [32, 16], "learning_rate": 0.01},
                "tensors": lite.tensor_details(),
            },
        )
    return TrainResult(
        rf_tag=str(rf.tag),
        tflite_tag=str(tfl.tag),
        rf_metrics=rf_metrics,
        tflite_metrics=tflite_metrics,
        parity=par.to_dict(),
        tflite_size=len(content),
        float32_size=f32_size,
        rf_size=int(rf.info.metadata["size_bytes"]),
        seconds=seconds,
    )
