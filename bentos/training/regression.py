"""Both models for a numeric target (the task `regression`, bentos.schema.task): a
RandomForestRegressor packed and walked as the classifier is, and a Keras MLP with a linear head
converted to TFLite; each judged on the hold-out rows against the mean predictor (R²) and against
its served form (parity in the target's units), with its report. Registration happens only once
every gate of both passed (bentos.training.pipeline)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bentos.errors import ConversionError
from bentos.schema import FeatureSchema

# The packed forest answers in float32: a difference of a few float32 steps of the largest
# prediction is rounding, not a different forest.
_PARITY_SHARE = 1e-5
_FLOAT32_STEPS = 4


def forest(config: Any, schema: FeatureSchema, split: list[np.ndarray], result: Any, step: Any):
    import joblib
    import sklearn
    from sklearn.ensemble import RandomForestRegressor

    from bentos import models
    from bentos.forest import PackedForest, PackError
    from bentos.training import report_regression as report
    from bentos.training.gates import evaluate_regression, gate_regression, mean_baseline
    from bentos.training.packing import pack, regression_parity
    from bentos.training.pipeline import reference_bytes, report_path
    from bentos.training.report import Parity, forest_importances

    x_train, x_test, y_train, y_test = split
    with step(f"Training RandomForest regressor ({config.n_estimators} trees)"):
        params = {"n_estimators": config.n_estimators, "random_state": config.seed, "n_jobs": -1}
        model = RandomForestRegressor(**params).fit(x_train, y_train)
        want = model.predict(x_test)
        model.n_jobs = 1  # serve-time setting: one request, one core
    with step("Packing the RandomForest"):
        try:
            packed_file = pack(model).to_bytes()
        except PackError as exc:
            raise ConversionError(f"RandomForest packing: {exc}") from None
        served = PackedForest.from_bytes(packed_file)
        # As served, on the hold-out rows and on them with a value knocked out of each.
        knocked = x_test.copy()
        knocked[np.arange(len(knocked)), np.arange(len(knocked)) % knocked.shape[1]] = np.nan
        rows = np.vstack([x_test, knocked])
        got = served.predict_regression(rows)
        wanted = np.concatenate([want, model.predict(knocked)])
        parity = regression_parity(wanted, got[:, 0], float(np.std(y_train)))
        parity["rows_with_missing"] = int(np.isnan(x_test).any(axis=1).sum()) + len(knocked)
    predicted = got[: len(x_test), 0]
    result.rf_metrics = evaluate_regression(y_test, predicted)
    result.rf_metrics["baseline"] = mean_baseline(y_test, y_train)
    rf_reference = reference_bytes(schema, x_train, predicted)
    with step("Drawing the RandomForest's report"):
        rf_report = report.build(
            "RandomForest",
            schema,
            y_test,
            predicted,
            result.rf_metrics,
            forest_importances(model),
            Parity("packed forest", "scikit-learn", parity, want),
        )
    failures = gate_regression("RandomForest", result.rf_metrics, config.min_r2)
    limit = _PARITY_SHARE * max(float(np.std(y_train)), 0.0) + _FLOAT32_STEPS * float(
        np.spacing(np.float32(np.abs(wanted).max()))
    )
    if parity["max_abs_diff"] > limit:
        failures.append(
            f"RandomForest packed parity: max difference {parity['max_abs_diff']:.3g} from "
            f"scikit-learn (at most {limit:.3g})"
        )

    def register(common: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            pkl = Path(tmp) / models.RF_FILE
            joblib.dump(model, pkl)
            meta = {
                **common,
                "metrics": result.rf_metrics,
                "sklearn_version": sklearn.__version__,
                "params": {**params, "n_jobs_serving": 1},
                "size_bytes": pkl.stat().st_size,
                "packed": {"parity": parity, "size_bytes": len(packed_file)},
            }
            forms = {models.RF_PACKED_FILE: packed_file, models.REFERENCE_FILE: rf_reference}
            saved = models.register_rf(
                model, meta, pkl, forms, lambda tag: rf_report.files(tag, common)
            )
            result.rf_tag = str(saved.tag)
            result.reports[result.rf_tag] = report_path(saved)
            result.rf_packed = meta["packed"]
            result.rf_size = meta["size_bytes"]

    return failures, register


def network(config: Any, schema: FeatureSchema, split: list[np.ndarray], result: Any, step: Any):
    from bentos.runners import TFLite
    from bentos.training import report_regression as report
    from bentos.training import tflite
    from bentos.training.gates import evaluate_regression, gate_regression, mean_baseline
    from bentos.training.pipeline import reference_bytes, register_tflite
    from bentos.training.report import Parity

    x_train, x_test, y_train, y_test = split
    dense = schema.dense
    assert dense is not None  # set by train() from the training rows
    x_train, raw_test, x_test = dense.apply(x_train), x_test, dense.apply(x_test)
    scale = tflite.TargetScale.fit(y_train)
    epochs = config.epochs or tflite.default_epochs(len(x_train))
    with step(f"Training Keras MLP regressor ({epochs} epochs)", epochs) as advance:
        keras_model = tflite.train_keras(
            x_train, scale.apply(y_train), 0, seed=config.seed, epochs=epochs, on_epoch=advance
        )
    with step(f"Converting to TFLite ({config.quantize})"):
        content = tflite.convert(keras_model, config.quantize, x_train)
        result.tflite_size = len(content)
        result.float32_size = tflite.float32_size(keras_model)
        keras_y = scale.restore(tflite.predict_keras(keras_model, x_test))
        lite = TFLite(content)
        predicted = scale.restore(lite.predict_proba(x_test))
        par = tflite.regression_parity(keras_y, predicted, y_test, scale.std)
        result.parity = par.to_dict()
        result.tflite_metrics = evaluate_regression(y_test, predicted)
        result.tflite_metrics["baseline"] = mean_baseline(y_test, y_train)
    lite_reference = reference_bytes(schema, split[0], predicted)
    with step("Drawing the TFLite model's report"):
        lite_report = report.build(
            "TFLite",
            schema,
            y_test,
            predicted,
            result.tflite_metrics,
            report.permutation_importances(
                lambda m: scale.restore(lite.predict_proba(dense.apply(m))),
                raw_test,
                y_test,
                seed=config.seed,
            ),
            Parity("TFLite", "Keras", {"quantization": config.quantize, **result.parity}, keras_y),
        )
    failures = gate_regression("TFLite", result.tflite_metrics, config.min_r2)
    failures += [f"TFLite parity: {f}" for f in par.failures(config.quantize)]

    def register(common: dict[str, Any]) -> None:
        # The network answers the standardized target: the runner and the edge restore it.
        target_scale = {"mean": scale.mean, "std": scale.std}
        register_tflite(
            result,
            config,
            common,
            content,
            lite,
            epochs,
            lite_report,
            lite_reference,
            target_scale=target_scale,
        )

    return failures, register
