"""Regression's models on a real table scikit-learn ships (diabetes: disease progression a year
later, a number, from ten measurements), with values knocked out: the forest packed and walked
as served, the Keras MLP converted to TFLite in every quantization mode and run by LiteRT as
served, each against the mean predictor's gate and its own parity gate."""

from __future__ import annotations

import numpy as np
import pytest

from bentos.forest import PackedForest
from bentos.runners import TFLite
from bentos.training import tflite
from bentos.training.gates import evaluate_regression, gate_regression, mean_baseline
from bentos.training.packing import pack, regression_parity


@pytest.fixture(scope="module")
def diabetes() -> list[np.ndarray]:
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x = x.copy()
    x[np.arange(0, len(x), 7), np.arange(0, len(x), 7) % x.shape[1]] = np.nan
    return train_test_split(x, y, test_size=0.2, random_state=42)


def test_the_forest_regressor_passes_its_gates_packed_as_served(diabetes):
    from sklearn.ensemble import RandomForestRegressor

    x_train, x_test, y_train, y_test = diabetes
    forest = RandomForestRegressor(n_estimators=50, random_state=42).fit(x_train, y_train)
    served = PackedForest.from_bytes(pack(forest).to_bytes()).predict_regression(x_test)
    parity = regression_parity(forest.predict(x_test), served[:, 0], float(np.std(y_train)))
    assert parity["max_diff_share"] < 1e-6  # float32 answers of a target near 150
    metrics = evaluate_regression(y_test, served[:, 0])
    metrics["baseline"] = mean_baseline(y_test, y_train)
    assert metrics["r2"] > 0.3 and metrics["rmse"] < metrics["baseline"]["rmse"]
    assert gate_regression("RandomForest", metrics, 0.1) == []
    failed = gate_regression("RandomForest", metrics, 0.99)
    assert failed and "R² " in failed[0] and "training mean" in failed[0]


def test_the_keras_regressor_converts_in_every_mode_within_its_parity_gate(diabetes):
    x_train, x_test, y_train, y_test = diabetes
    # The network's input as the schema's dense input makes it (bentos.schema.dense): missing
    # values filled with the training median, then standardized on the host.
    fill = np.nanmedian(x_train, axis=0)
    filled = [np.where(np.isnan(m), fill, m) for m in diabetes[:2]]
    mean, std = filled[0].mean(axis=0), filled[0].std(axis=0)
    x_train, x_test = (((m - mean) / std).astype(np.float32) for m in filled)
    scale = tflite.TargetScale.fit(y_train)
    model = tflite.train_keras(x_train, scale.apply(y_train), 0, seed=42, epochs=40)
    keras_y = scale.restore(tflite.predict_keras(model, x_test))
    metrics = evaluate_regression(y_test, keras_y)
    metrics["baseline"] = mean_baseline(y_test, y_train)
    assert gate_regression("Keras", metrics, 0.1) == [], metrics
    for mode in tflite.QUANTIZE_MODES:
        lite = TFLite(tflite.convert(model, mode, x_train))
        lite_y = scale.restore(lite.predict_proba(x_test))
        parity = tflite.regression_parity(keras_y, lite_y, y_test, scale.std)
        assert parity.failures(mode) == [], (mode, parity.to_dict())
        assert lite.tensor_details()["outputs"][0]["shape"][-1] == 1
