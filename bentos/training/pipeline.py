"""The training pipeline: data, split, both models, gates, then registration of both or neither."""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bentos.errors import ConversionError, DataError, GateError
from bentos.schema import FeatureSchema
from bentos.schema.encode import encode_columns
from bentos.schema.kinds import Overrides
from bentos.schema.kinds import table as kinds_table
from bentos.training import data as data_mod
from bentos.training.gates import balanced, baseline, evaluate, gate

MODELS = ("rf", "tflite")


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
    kinds: Overrides = field(default_factory=Overrides)  # column kinds named by the user
    # "auto": balanced class weights when a class is rare (imbalanced), none otherwise.
    class_weight: str = "auto"
    # How much each model's macro F1 must exceed the majority-class baseline's.
    min_lift: float = 0.05
    task: str | None = None  # None: inferred from the target (bentos.schema.task)
    # Regression: the share of the hold-out variance each model must explain beyond the mean's.
    min_r2: float = 0.1


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
    reports: dict[str, str] = field(default_factory=dict)  # tag -> its report's index.html


# Shows a slow step to people: `with step(title) as advance:`, and for a step of `total` parts
# (epochs), `with step(title, total) as advance: ... advance(done, {"loss": ...})`.
Step = Callable[..., Any]


@contextmanager
def _quiet(_: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    yield lambda *args: None


def load(config: TrainConfig) -> data_mod.Dataset:
    if config.data:
        if not config.target:
            raise DataError("--data needs --target, the name of the label column")
        return data_mod.load_table(config.data, config.target, config.kinds, config.task)
    return data_mod.load_builtin(config.dataset, config.kinds, config.task)


def held_out(config: TrainConfig) -> Any:
    """The rows `train` holds out for its gates (the same seed and split), with the target: the
    evaluation data of a retrain when no other is given."""
    from sklearn.model_selection import train_test_split

    ds = load(config)
    table = ds.features.assign(**{str(ds.target.name): ds.target.to_numpy()})
    _, test = train_test_split(
        np.arange(len(table)),
        test_size=config.test_size,
        stratify=None if ds.task == "regression" else ds.target.to_numpy(),
        random_state=config.seed,
    )
    return table.iloc[np.sort(test)].reset_index(drop=True)


def features(ds: data_mod.Dataset) -> np.ndarray:
    """The training table's feature matrix (NaN where missing), by the one path every door
    takes (bentos.schema.encode); DataError names the first value that is not its column's kind."""
    x, problems, _ = encode_columns(
        ds.columns, ds.features.__getitem__, len(ds.features), parse_strings=True
    )
    if problems:
        row, name, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{ds.source}: row {row}, column {name!r}: {message}{more}")
    return x


def train(
    config: TrainConfig, step: Step = _quiet, show: Callable[[str], None] = lambda _: None
) -> TrainResult:
    """Run the whole pipeline. DataError, GateError or ConversionError leave the store as it was.

    The arguments and the data are checked before anything heavy is imported: a wrong path or
    column is reported in about a second, not after TensorFlow has loaded. `show` gets the
    table of column kinds."""
    from sklearn.model_selection import train_test_split

    unknown = sorted(set(config.models) - set(MODELS))
    if unknown or not config.models:
        raise DataError(f"models {unknown or '(none)'}: allowed are {', '.join(MODELS)}")
    with step("Loading data"):
        ds = load(config)
    show(kinds_table(ds.columns))
    show(f"Task: {ds.task} of {ds.target.name!r} ({ds.task_why})")
    regression = ds.task == "regression"
    if regression:
        from bentos.schema.task import regression_target

        labels, y = np.array([]), regression_target(ds.target, ds.source)
    else:
        labels, y = np.unique(ds.target.to_numpy(), return_inverse=True)
    schema = FeatureSchema.from_training(
        ds.features, labels, str(ds.target.name), ds.columns, task=ds.task
    )
    x = features(ds)
    try:
        split = train_test_split(
            x,
            y,
            test_size=config.test_size,
            stratify=None if regression else y,
            random_state=config.seed,
        )
    except ValueError as exc:  # e.g. a class with one row cannot be stratified
        raise DataError(
            f"{ds.source}: target column {schema.target!r} cannot be split for a hold-out set: {exc}"
        ) from None
    # The TFLite model's fill values come from the training rows, not the hold-out ones.
    schema = schema.with_dense(split[0])
    # "auto" decided once, from the labels: both models read the resolved setting.
    weigh = False if regression else balanced(config.class_weight, y)
    config = replace(config, class_weight="balanced" if weigh else "none")
    if "tflite" in config.models:
        try:
            from bentos.training.tflite import tensorflow

            tensorflow()
        except ImportError as exc:  # the Bento image serves TFLite but cannot train it
            raise DataError(
                f"training the TFLite model needs TensorFlow ({exc}); install the 'train' extra, "
                "or train the RandomForest only (models: rf)"
            ) from None

    result = TrainResult()
    gate_failures: list[str] = []
    register: list[Callable[[dict[str, Any]], None]] = []  # run only once every gate passed
    trainers = {"rf": _forest, "tflite": _tflite}
    if regression:
        from bentos.training import regression as numbers

        trainers = {"rf": numbers.forest, "tflite": numbers.network}
    for name in (m for m in MODELS if m in config.models):
        failures, action = trainers[name](config, schema, split, result, step)
        gate_failures += failures
        register.append(action)
    if gate_failures:
        raise GateError("; ".join(gate_failures) + "; nothing was registered")
    common = {
        "schema": schema.to_dict(),
        "schema_sha256": schema.sha256(),
        "training_data": {"source": ds.source, "sha256": ds.sha256, "rows": len(x)},
        "split": {
            "test_size": config.test_size,
            "seed": config.seed,
            "stratified": not regression,
        },
        "class_weight": "balanced" if weigh else "none",
        "python": platform.python_version(),
    }
    with step("Registering models"):
        for action in register:
            action(common)
    return result


Split = list[np.ndarray]  # x_train, x_test, y_train, y_test
Trained = tuple[list[str], Callable[[dict[str, Any]], None]]  # gate failures, registration


def _forest(
    config: TrainConfig, schema: FeatureSchema, split: Split, result: TrainResult, step: Step
) -> Trained:
    import joblib
    import sklearn
    from sklearn.ensemble import RandomForestClassifier

    from bentos import models
    from bentos.forest import PackedForest, PackError
    from bentos.training import report
    from bentos.training.packing import forest_parity, pack

    x_train, x_test, y_train, y_test = split
    with step(f"Training RandomForest ({config.n_estimators} trees)"):
        params = {
            "n_estimators": config.n_estimators,
            "random_state": config.seed,
            "n_jobs": -1,
            "class_weight": "balanced" if config.class_weight == "balanced" else None,
        }
        forest = RandomForestClassifier(**params).fit(x_train, y_train)
        # The hold-out probabilities, once: the metrics, the packed parity and the report's.
        proba = forest.predict_proba(x_test)
        result.rf_metrics = evaluate(y_test, proba.argmax(1), schema.labels)
        result.rf_metrics["baseline"] = baseline(y_test, y_train, schema.labels)
        forest.n_jobs = 1  # serve-time setting: one request, one core
    with step("Packing the RandomForest"):
        try:
            packed_file = pack(forest).to_bytes()
        except PackError as exc:
            raise ConversionError(f"RandomForest packing: {exc}") from None
        # Checked as it will be served, on the hold-out rows, and on the same rows with a value
        # missing in each, so that every split's missing-value direction is exercised.
        served = PackedForest.from_bytes(packed_file)
        knocked = x_test.copy()
        knocked[np.arange(len(knocked)), np.arange(len(knocked)) % knocked.shape[1]] = np.nan
        parity = forest_parity(
            np.vstack([proba, forest.predict_proba(knocked)]), served, np.vstack([x_test, knocked])
        )
        parity["rows_with_missing"] = int(np.isnan(x_test).any(axis=1).sum()) + len(knocked)
    # What the drift check compares served rows with: the training rows, and this model's
    # answers on the hold-out rows (bentos.monitoring.profile).
    rf_reference = reference_bytes(schema, x_train, proba)
    with step("Drawing the RandomForest's report"):
        rf_report = report.build(
            "RandomForest",
            schema,
            y_test,
            proba,
            result.rf_metrics,
            report.forest_importances(forest),
            report.Parity("packed forest", "scikit-learn", parity),
        )
    failures = gate("RandomForest", result.rf_metrics, config.min_accuracy, config.min_lift)
    if not parity["labels_identical"] or parity["max_abs_diff"] > 1e-5:
        failures.append(
            f"RandomForest packed parity: labels identical {parity['labels_identical']}, "
            f"max probability difference {parity['max_abs_diff']:.2e} (at most 1e-5)"
        )

    def register(common: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            # Persisted with joblib (as the classic tutorial does); the store's copy is checked
            # against this file's hash, which every later load verifies.
            pkl = Path(tmp) / models.RF_FILE
            joblib.dump(forest, pkl)
            meta = {
                **common,
                "metrics": result.rf_metrics,
                "sklearn_version": sklearn.__version__,
                # BentoML's metadata takes no None.
                "params": {
                    **params,
                    "class_weight": str(params["class_weight"]),
                    "n_jobs_serving": 1,
                },
                "size_bytes": pkl.stat().st_size,
                "packed": {"parity": parity, "size_bytes": len(packed_file)},
            }
            forms = {models.RF_PACKED_FILE: packed_file, models.REFERENCE_FILE: rf_reference}
            saved = models.register_rf(
                forest, meta, pkl, forms, lambda tag: rf_report.files(tag, common)
            )
            result.rf_tag = str(saved.tag)
            result.reports[result.rf_tag] = report_path(saved)
            result.rf_packed = meta["packed"]
            result.rf_size = meta["size_bytes"]

    return failures, register


def _tflite(
    config: TrainConfig, schema: FeatureSchema, split: Split, result: TrainResult, step: Step
) -> Trained:
    from bentos.runners import TFLite
    from bentos.training import report, tflite

    x_train, x_test, y_train, y_test = split
    dense = schema.dense
    assert dense is not None  # set by train() from the training rows
    x_train, raw_test, x_test = dense.apply(x_train), x_test, dense.apply(x_test)
    epochs = config.epochs or tflite.default_epochs(len(x_train))
    with step(f"Training Keras MLP ({epochs} epochs)", epochs) as advance:
        keras_model = tflite.train_keras(
            x_train,
            y_train,
            len(schema.labels),
            seed=config.seed,
            epochs=epochs,
            on_epoch=advance,
            balanced=config.class_weight == "balanced",
        )
    with step(f"Converting to TFLite ({config.quantize})"):
        content = tflite.convert(keras_model, config.quantize, x_train)
        result.tflite_size = len(content)
        result.float32_size = tflite.float32_size(keras_model)
        # The hold-out probabilities, once each: the parity, the metrics and the report's.
        keras_p = tflite.predict_keras(keras_model, x_test)
        lite = TFLite(content)
        proba = lite.predict_proba(x_test)
        par = tflite.parity(keras_p, proba, y_test)
        result.parity = par.to_dict()
        result.tflite_metrics = evaluate(y_test, proba.argmax(1), schema.labels)
        result.tflite_metrics["baseline"] = baseline(y_test, split[2], schema.labels)
    lite_reference = reference_bytes(schema, split[0], proba)
    with step("Drawing the TFLite model's report"):
        lite_report = report.build(
            "TFLite",
            schema,
            y_test,
            proba,
            result.tflite_metrics,
            report.permutation_importances(
                lambda m: lite.predict_proba(dense.apply(m)), raw_test, y_test, seed=config.seed
            ),
            report.Parity(
                "TFLite", "Keras", {"quantization": config.quantize, **result.parity}, keras_p
            ),
        )
    failures = gate("TFLite", result.tflite_metrics, config.min_accuracy, config.min_lift)
    failures += [f"TFLite parity: {f}" for f in par.failures(config.quantize)]

    def register(common: dict[str, Any]) -> None:
        register_tflite(result, config, common, content, lite, epochs, lite_report, lite_reference)

    return failures, register


def register_tflite(
    result: TrainResult,
    config: TrainConfig,
    common: dict[str, Any],
    content: bytes,
    lite: Any,
    epochs: int,
    lite_report: Any,
    reference: bytes,
    **extra: Any,
) -> None:
    """Register the TFLite model (a classifier's or a regression's, `extra` its own metadata)
    once every gate passed."""
    from bentos import models
    from bentos.training import tflite

    meta = {
        **common,
        "metrics": result.tflite_metrics,
        "quantization": config.quantize,
        "size_bytes": len(content),
        "float32_size_bytes": result.float32_size,
        "parity": result.parity,
        "tensorflow_version": tflite.tensorflow().__version__,
        "params": {"epochs": epochs, "hidden": [32, 16], "learning_rate": 0.01},
        "tensors": lite.tensor_details(),
        **extra,
    }
    saved = models.register_tflite(
        content,
        meta,
        lambda tag: lite_report.files(tag, common),
        {models.REFERENCE_FILE: reference},
    )
    result.tflite_tag = str(saved.tag)
    result.reports[result.tflite_tag] = report_path(saved)


def reference_bytes(schema: FeatureSchema, x_train: np.ndarray, answers: np.ndarray) -> bytes:
    """The reference profile a model is registered with, as its file's bytes: `answers` are
    the hold-out probabilities, or a regression's predictions."""
    from bentos.monitoring.profile import reference_profile

    predicted = answers if schema.regression else answers.argmax(1)
    profile = reference_profile(schema, x_train, predicted)
    return (json.dumps(profile, allow_nan=False, separators=(",", ":")) + "\n").encode()


def report_path(model: Any) -> str:
    """Where the store holds a registered model's report page (bentos.training.report)."""
    import bentoml

    from bentos import models

    return str(Path(bentoml.models.get(model.tag).path) / models.REPORT_DIR / models.REPORT_PAGE)
