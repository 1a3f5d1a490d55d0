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

MODELS = ("rf", "tflite")


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
    models: tuple[str, ...] = MODELS


@dataclass
class TrainResult:
    """What was registered; the fields of a model not trained (see TrainConfig.models) are None."""

    rf_tag: str | None = None
    tflite_tag: str | None = None
    rf_metrics: dict[str, Any] | None = None
    rf_packed: dict[str, Any] | None = None
    tflite_metrics: dict[str, Any] | None = None
    parity: dict[str, float] | None = None
    tflite_size: int = 0
    float32_size: int = 0
    rf_size: int = 0
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
    from bentos.forest import PackedForest, PackError

    unknown = sorted(set(config.models) - set(MODELS))
    if unknown or not config.models:
        raise data_mod.DataError(f"models {unknown or '(none)'}: allowed are {', '.join(MODELS)}")
    if "tflite" in config.models:
        try:
            import tensorflow  # noqa: F401
        except ImportError as exc:  # the Bento image serves TFLite but cannot train it
            raise data_mod.DataError(
                f"training the TFLite model needs TensorFlow ({exc}); install the 'train' extra, "
                "or train the RandomForest only (models: rf)"
            ) from None

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

    result = TrainResult(seconds=seconds)
    gate_failures: list[str] = []
    register: list[Callable[[dict[str, Any]], None]] = []  # run only once every gate passed
    if "rf" in config.models:
        t0 = time.perf_counter()
        with step(f"Training RandomForest ({config.n_estimators} trees)"):
            params = {
                "n_estimators": config.n_estimators,
                "random_state": config.seed,
                "n_jobs": -1,
            }
            forest = RandomForestClassifier(**params).fit(x_train, y_train)
            result.rf_metrics = evaluate(y_test, forest.predict(x_test), schema.labels)
            forest.n_jobs = 1  # serve-time setting: one request, one core
        with step("Packing the RandomForest"):
            try:
                packed_file = PackedForest.from_sklearn(forest).to_bytes()
            except PackError as exc:
                raise conversion.ConversionError(f"RandomForest packing: {exc}") from None
            # Checked as it will be served, on the hold-out rows.
            forms_parity = {
                "packed": conversion.forest_parity(
                    forest, PackedForest.from_bytes(packed_file), x_test
                ),
            }
        seconds["rf"] = time.perf_counter() - t0
        gate_failures += _accuracy_gate("RandomForest", result.rf_metrics, config.min_accuracy)
        for form, par in forms_parity.items():
            if not par["labels_identical"] or par["max_abs_diff"] > 1e-5:
                gate_failures.append(
                    f"RandomForest {form} parity: labels identical {par['labels_identical']}, "
                    f"max probability difference {par['max_abs_diff']:.2e} (at most 1e-5)"
                )

        def register_rf(common: dict[str, Any]) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                # Persisted with joblib (as the classic tutorial does); the store's copy is
                # checked against this file's hash, which every later load verifies.
                pkl = Path(tmp) / models.RF_FILE
                joblib.dump(forest, pkl)
                meta = {
                    **common,
                    "metrics": result.rf_metrics,
                    "sklearn_version": sklearn.__version__,
                    "params": {**params, "n_jobs_serving": 1},
                    "size_bytes": pkl.stat().st_size,
                    "packed": {"parity": forms_parity["packed"], "size_bytes": len(packed_file)},
                }
                forms = {models.RF_PACKED_FILE: packed_file}
                result.rf_tag = str(models.register_rf(forest, meta, pkl, forms).tag)
                result.rf_packed = meta["packed"]
                result.rf_size = meta["size_bytes"]

        register.append(register_rf)

    if "tflite" in config.models:
        t0 = time.perf_counter()
        epochs = config.epochs or conversion.default_epochs(len(x_train))
        with step(f"Training Keras MLP ({epochs} epochs)"):
            keras_model = conversion.train_keras(
                x_train, y_train, len(labels), seed=config.seed, epochs=epochs
            )
        with step(f"Converting to TFLite ({config.quantize})"):
            content = conversion.convert(keras_model, config.quantize, x_train)
            result.tflite_size = len(content)
            result.float32_size = conversion.float32_size(keras_model)
            par = conversion.parity(keras_model, content, x_test, y_test)
            result.parity = par.to_dict()
            lite = conversion.TFLiteRunner.from_bytes(content)
            result.tflite_metrics = evaluate(
                y_test, lite.predict_proba(x_test).argmax(1), schema.labels
            )
        seconds["tflite"] = time.perf_counter() - t0
        gate_failures += _accuracy_gate("TFLite", result.tflite_metrics, config.min_accuracy)
        gate_failures += [f"TFLite parity: {f}" for f in par.failures(config.quantize)]

        def register_tflite(common: dict[str, Any]) -> None:
            import tensorflow as tf

            meta = {
                **common,
                "metrics": result.tflite_metrics,
                "quantization": config.quantize,
                "size_bytes": len(content),
                "float32_size_bytes": result.float32_size,
                "parity": result.parity,
                "tensorflow_version": tf.__version__,
                "params": {"epochs": epochs, "hidden": [32, 16], "learning_rate": 0.01},
                "tensors": lite.tensor_details(),
            }
            result.tflite_tag = str(models.register_tflite(content, meta).tag)

        register.append(register_tflite)

    if gate_failures:
        raise GateError("; ".join(gate_failures) + "; nothing was registered")
    common = {
        "schema": schema.to_dict(),
        "training_data": {"source": ds.source, "sha256": ds.sha256, "rows": len(x)},
        "split": {"test_size": config.test_size, "seed": config.seed, "stratified": True},
        "python": platform.python_version(),
    }
    with step("Registering models"):
        for action in register:
            action(common)
    return result


def _accuracy_gate(name: str, metrics: dict[str, Any], minimum: float) -> list[str]:
    if metrics["accuracy"] < minimum:
        return [f"{name} accuracy {metrics['accuracy']:.4f} < --min-accuracy {minimum}"]
    return []
