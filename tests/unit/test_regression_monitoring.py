"""The monitors for a model that predicts a number, on scikit-learn's diabetes table: the
prediction profile is a numeric one, the hold-out rows as a window raise no drift
while moved inputs move the predictions and raise both; delayed labels judge RMSE, MAE and R²
against the hold-out figures, an error growing past its relative margin being a fall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from bentos.errors import DataError
from bentos.monitoring.drift import check_drift
from bentos.monitoring.evaluate import evaluate, report_files
from bentos.monitoring.profile import reference_profile
from bentos.schema import FeatureSchema


@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    data = load_diabetes(as_frame=True)
    frame, y = data.data, data.target.to_numpy()
    schema = FeatureSchema.from_training(frame, [], "progression", task="regression")
    x = frame.to_numpy(dtype=np.float64)
    forest = RandomForestRegressor(n_estimators=20, random_state=0).fit(x[:300], y[:300])
    reference = reference_profile(schema, x[:300], forest.predict(x[300:]))
    return schema, x, y, forest, reference


def test_the_prediction_profile_is_numeric(diabetes):
    _, _, _, _, reference = diabetes
    prediction = reference["prediction"]
    assert prediction["kind"] == "numeric" and prediction["count"] == 142
    assert prediction["edges"] == sorted(prediction["edges"]) and prediction["sample"]


def test_a_window_like_training_is_quiet_and_moved_inputs_move_the_predictions(diabetes):
    schema, x, _, forest, reference = diabetes
    same = x[300:]  # the hold-out rows: drawn as the training rows were
    quiet = check_drift(reference, schema, same, forest.predict(same))
    assert quiet["drifted"] == [] and quiet["prediction_drifted"] is False
    moved = same.copy()
    moved[:, schema.names.index("bmi")] += 0.08  # heavier patients: a worse progression
    loud = check_drift(reference, schema, moved, forest.predict(moved))
    assert "bmi" in loud["drifted"] and loud["prediction_drifted"] is True
    assert loud["prediction"]["kind"] == "numeric"


def _logged(predicted: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    start = datetime(2026, 12, 6, tzinfo=UTC)
    return pd.DataFrame(
        {
            "model": "rf-classifier:abc",
            "time": [start + timedelta(minutes=i) for i in range(len(truth))],
            "prediction": [str(np.float32(v)) for v in predicted],
            "truth": truth,
        }
    )


def test_delayed_labels_judge_a_regression_s_errors_by_a_relative_margin(diabetes):
    _, x, y, forest, _ = diabetes
    held = forest.predict(x[300:])
    rmse = float(np.sqrt(np.mean((held - y[300:]) ** 2)))
    holdout = {"rf-classifier:abc": {"rmse": rmse, "mae": 40.0, "r2": 0.4}}
    fine = evaluate(_logged(held, y[300:]), holdout, 0.1, "1h")["models"]["rf-classifier:abc"]
    assert fine["metrics"] == ["rmse", "mae", "r2"] and "rmse" not in fine["fell"]
    worse = evaluate(_logged(held + 40.0, y[300:]), holdout, 0.1, "1h")
    model = worse["models"]["rf-classifier:abc"]
    assert worse["fell"] and {"rmse", "r2"} <= set(model["fell"]), model
    assert b"rmse" in report_files({"margin": 0.1, **worse})["index.html"]


def test_a_label_that_is_not_a_number_is_named(diabetes):
    frame = _logged(np.array([1.0, 2.0]), np.array([1.0, 2.0])).astype({"truth": object})
    frame.loc[1, "truth"] = "n/a"
    with pytest.raises(DataError, match=r"1 label\(s\) of a regression .* 'n/a'"):
        evaluate(frame, {"rf-classifier:abc": {"rmse": 1.0}}, 0.1, "1h")
