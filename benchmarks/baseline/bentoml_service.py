"""A peer: bare BentoML, written the way BentoML's scikit-learn example writes a service (a
`@bentoml.service` class holding a `BentoModel`, loaded with `bentoml.sklearn.load_model`,
one `@bentoml.api` method taking the rows as an `np.ndarray`), with 2 workers as the Flask
baseline and service.py have. It serves the same forest, through scikit-learn, with
BentoML's defaults for everything else (its own routing, validation, metrics and access log).

    BENTOS_RF_MODEL=rf-classifier:latest bentoml serve benchmarks.baseline.bentoml_service:Classifier

The body is the example's: {"input_series": [[f0, f1, ...], ...]}, features in the schema's
order. Benchmark only.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np


@bentoml.service(workers=2, traffic={"timeout": 30})
class Classifier:
    bento_model = bentoml.models.BentoModel(
        os.environ.get("BENTOS_RF_MODEL", "rf-classifier:latest")
    )

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.bento_model)

    @bentoml.api
    def classify(self, input_series: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(input_series)
