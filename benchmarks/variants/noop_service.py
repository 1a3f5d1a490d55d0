"""The framework's ceiling: the same BentoML service shape as service.py (a Starlette app
mounted with @bentoml.asgi_app, the same workers, traffic, logging, GC and middleware), whose
route does no work. Benchmark only."""

from __future__ import annotations

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bentos.serving.app import read_body
from bentos.serving.middleware import JsonErrors, SpreadConnections
from bentos.serving.runtime import tune_gc
from bentos.settings import ServingSettings, load

SETTINGS = load(ServingSettings)

BODY = b'{"predictions":[0],"probabilities":[[1.0,0.0,0.0]],"model":"noop"}'


async def noop(request: Request) -> Response:
    await read_body(request, SETTINGS.max_body_bytes)  # as /predict reads it
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/noop", noop, methods=["POST"])])


@bentoml.service(
    name="noop",
    workers=2,
    traffic={"timeout": 30, "max_concurrency": 128},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": "."},  # as service.py: no span per request
)
@bentoml.asgi_app(app, path="/")
class Noop:
    def __init__(self) -> None:
        tune_gc(SETTINGS.gc_gen0_threshold)  # as service.py does


Noop.add_asgi_middleware(JsonErrors)
Noop.add_asgi_middleware(SpreadConnections, every=SETTINGS.keepalive_requests)
