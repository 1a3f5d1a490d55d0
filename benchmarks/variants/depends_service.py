"""Variant for the runner-placement probe: the RandomForest runner behind `bentoml.depends`.

The same validation and runner as service.py, but the model runs in its own worker pool with
BentoML's adaptive batching, reached over the dependency hop. Served only by the benchmark.
"""

from __future__ import annotations

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from bentos.models import open_model
from bentos.runners import RandomForestRunner
from bentos.settings import Settings

app = Starlette()


@bentoml.service(workers=1)
class RFRunner:
    model = bentoml.models.BentoModel("rf-classifier:latest")

    def __init__(self) -> None:
        self.runner = RandomForestRunner(self.model, Settings.from_env().rf_backend)

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=100)
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.runner.predict_proba(x)


@bentoml.service(workers=2)
@bentoml.asgi_app(app, path="/")
class Entry:
    rf = bentoml.depends(RFRunner)
    model = bentoml.models.BentoModel("rf-classifier:latest")

    def __init__(self) -> None:
        self.schema = open_model(self.model).schema


async def predict(request: Request) -> JSONResponse:
    svc = bentoml.get_current_service()
    body = await request.json()
    x = svc.schema.validate_instances(body["instances"], 1000)
    proba = np.asarray(await svc.rf.to_async.predict_proba(x))
    labels = svc.schema.labels
    return JSONResponse(
        {
            "predictions": [labels[i] for i in proba.argmax(1)],
            "probabilities": proba.round(6).tolist(),
        }
    )


app.add_route("/predict", predict, methods=["POST"])
