"""The framework's ceiling: service.py's BentoML service shape with exactly its settings (2
workers, traffic, metrics, logging, tracing, GC) and its middlewares, in its order, whose
/predict reads the body as /predict reads it and answers a constant: everything but the model
call and its JSON. Benchmark only: `benchmarks.online`'s `noop` target, beside the floor of a
bare ASGI app (benchmarks/variants/floor.py)."""

from __future__ import annotations

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bentos.serving import middleware
from bentos.serving.app import read_body
from bentos.serving.metrics import bentoml_metrics
from bentos.serving.runtime import tune_gc
from bentos.settings import ServingSettings, load

SETTINGS = load(ServingSettings)

BODY = b'{"predictions":[0],"probabilities":[[1.0,0.0,0.0]],"model":"noop"}'


async def noop(request: Request) -> Response:
    await read_body(request, SETTINGS.max_body_bytes)  # as /predict reads it
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/predict", noop, methods=["POST"])])


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
        app.state.metrics = bentoml_metrics()  # as service.py: Observe counts every request
        tune_gc(SETTINGS.gc_gen0_threshold)


middleware.install(Noop, app, SETTINGS)  # service.py's middlewares, in its order
