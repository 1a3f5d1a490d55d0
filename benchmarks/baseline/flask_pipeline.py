"""The baseline for a mixed table (text categories, missing values): the classic tutorial
deployment of a scikit-learn Pipeline (a ColumnTransformer that imputes the numbers and one-hot
encodes the categories, then a RandomForest), unpickled with joblib; run by gunicorn with 2 sync
workers (benchmarks/mixed.py starts it):

    BASELINE_MODEL=/path/to/pipeline.pkl BASELINE_FEATURES=sex,age,passengerClass \
        gunicorn -w 2 -b 127.0.0.1:5000 benchmarks.baseline.flask_pipeline:app

Same request and response bodies as /predict; no validation beyond what pandas does.
Benchmark only.
"""

from __future__ import annotations

import os

import joblib
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.environ["BASELINE_MODEL"])
features = os.environ["BASELINE_FEATURES"].split(",")
labels = [str(v) for v in model.classes_]


@app.route("/health")
def health():
    return "ok"


@app.route("/predict", methods=["POST"])
def predict():
    frame = pd.DataFrame(request.get_json()["instances"])[features]
    proba = model.predict_proba(frame)
    return jsonify(
        predictions=[labels[i] for i in proba.argmax(1)],
        probabilities=proba.round(6).tolist(),
        model="baseline",
    )
