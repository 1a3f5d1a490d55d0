"""The baseline: the classic tutorial deployment, replicated. A Flask app that unpickles the
model with joblib and predicts per request; run by gunicorn with 2 sync workers:

    BASELINE_MODEL=/path/to/saved_model.pkl gunicorn -w 2 -b 127.0.0.1:5000 benchmarks.baseline.flask_app:app

It serves the same RandomForest pickle the rf-classifier model holds, with the same request
and response bodies as /predict, and no validation beyond what pandas does. For a mixed table
(benchmarks/mixed.py) BASELINE_MODEL is a scikit-learn Pipeline (a ColumnTransformer, then the
forest), as the tutorials deploy one: it gets the DataFrame itself. A regressor (a Pipeline
ending in a RandomForestRegressor) answers its numbers.
"""

from __future__ import annotations

import os

import joblib
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.environ["BASELINE_MODEL"])
features = os.environ["BASELINE_FEATURES"].split(",")
labels = [v for v in os.environ.get("BASELINE_LABELS", "").split(",") if v]
pipeline = hasattr(model, "steps")
regression = not hasattr(model, "classes_")  # a regressor: numbers, as /predict answers them


@app.route("/health")
def health():
    return "ok"


@app.route("/predict", methods=["POST"])
def predict():
    frame = pd.DataFrame(request.get_json()["instances"])[features]
    x = frame if pipeline else frame.to_numpy()
    if regression:
        return jsonify(predictions=model.predict(x).tolist(), model="baseline")
    proba = model.predict_proba(x)
    return jsonify(
        predictions=[labels[i] for i in proba.argmax(1)],
        probabilities=proba.round(6).tolist(),
        model="baseline",
    )
