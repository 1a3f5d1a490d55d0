"""The framework's ceiling: service.py's BentoML service shape with exactly its settings (2
workers, traffic, metrics, logging, tracing, GC) and its middleware, whose /predict is a hot
route as service.py's is (bentos.serving.middleware.Front answers it from the body it read) and
answers a constant: everything but the model call and its JSON. Benchmark only:
`benchmarks.online`'s `noop` target, beside the floor of a bare ASGI app
(benchmarks/variants/floor.py)."""

from __future__ import annotations

import bentoml
from starlette.applications import Starlette

from bentos.serving import middleware
from bentos.serving.app import Answer
from bentos.serving.metrics import bentoml_metrics
from bentos.serving.runtime import tune_gc
from bentos.settings import ServingSettings, load

SETTINGS = load(ServingSettings)

BODY = b'{"predictions":[0],"probabilities":[[1.0,0.0,0.0]],"model":"noop"}'
ANSWER = Answer(200, BODY, [(b"content-type", b"application/json")])


async def noop(core: object, scope: dict, body: bytes) -> Answer:
    return ANSWER


app = Starlette()


# service.py's decorator's settings, but the models (and the port, which the benchmark gives).
@bentoml.service(
    name="noop",
    workers=2,
    traffic={"timeout": 30},
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": "."},
)
@bentoml.asgi_app(app, path="/")
class Noop:
    def __init__(self) -> None:
        app.state.metrics = bentoml_metrics()  # as service.py: Front counts every request
        app.state.core = self  # Front answers hot routes once a core is attached
        tune_gc(SETTINGS.gc_gen0_threshold)


# service.py's middleware, with the no-op as its one hot route.
middleware.install(Noop, app, SETTINGS, hot={"/predict": noop})
