"""The online service: both models, behind one BentoML service, over HTTP on port 3000.

Why the runners live in the entry service's own workers rather than behind `bentoml.depends`:
a `bentoml.depends` hop with adaptive batching cost most of the throughput and added the
batching wait at one client, while the models themselves take microseconds to a few
milliseconds per call (docs/service-design.md). Each runner keeps
its own adaptive batching, in-process (bentos.serving.batching): requests that reach a fast model in
the same event-loop turn share one call, and those that arrive while a slow model is busy share
its next call; nothing waits on a timer.

Why the JSON routes are a Starlette app mounted with `@bentoml.asgi_app` rather than
`@bentoml.api` methods: the error bodies must name the row and field of bad input, and the
mounted route answered far more requests/s than an `@bentoml.api` route (BENCHMARKS.md).
`/livez`, `/readyz` and `/metrics` are BentoML's own.
"""

from __future__ import annotations

import bentoml

from bentos.runners import RandomForestRunner, TFLiteRunner
from bentos.serving.app import Models, create_app
from bentos.serving.middleware import JsonErrors, SpreadConnections
from bentos.serving.runtime import tune_gc
from bentos.settings import ServingSettings, load

SETTINGS = load(ServingSettings)
app = create_app()


@bentoml.service(
    name="tabular-classifier",
    # One worker per core; the Kubernetes ConfigMap (BENTOML_CONFIG) overrides these.
    workers=2,
    # timeout: a request still running after 30 s gets a 504. max_concurrency: requests past
    # 128 in flight (64 per worker) get a 429 at once rather than a place in an unbounded
    # queue; the benchmark's 64 clients stay below it (BENCHMARKS.md).
    traffic={"timeout": 30, "max_concurrency": 128},
    # A log line per request cost a large share of the throughput (BENCHMARKS.md, "Choices");
    # /metrics still counts every request. BENTOML_CONFIG can turn it back on.
    logging={"access": {"enabled": False}},
    http={"port": 3000},
)
@bentoml.asgi_app(app, path="/")
class TabularClassifier:
    # Class attributes, so `bentoml build` packs these models into the Bento.
    rf_model = bentoml.models.BentoModel(SETTINGS.rf_model)
    tflite_model = bentoml.models.BentoModel(SETTINGS.tflite_model)

    def __init__(self) -> None:
        # Loading verifies each file's sha256; a failure here stops the worker loudly.
        app.state.models = Models(
            {
                "rf": ("/predict", RandomForestRunner(self.rf_model, SETTINGS.rf_backend)),
                "tflite": ("/predict_edge", TFLiteRunner(self.tflite_model)),
            },
            SETTINGS,
        )
        tune_gc(SETTINGS.gc_gen0_threshold)

    def __is_ready__(self) -> bool:
        return getattr(app.state, "models", None) is not None


TabularClassifier.add_asgi_middleware(JsonErrors)
TabularClassifier.add_asgi_middleware(SpreadConnections, every=SETTINGS.keepalive_requests)
