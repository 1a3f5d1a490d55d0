"""ASGI middleware around the whole service (BentoML's own routes included), outermost first:

- JsonErrors: the framework's plain-text 404/405/500 become JSON like every other rejection.
- SpreadConnections: every Nth response of a worker closes its connection, so that keep-alive
  clients spread again over the worker processes and, in Kubernetes, over new pods.
- Observe: every request counted and timed by route template (bentos.serving.metrics).
- Admission: a request's body must arrive within a bounded time (else 408), and only a request
  whose body has arrived takes one of the worker's slots for model work (else 429): a slow
  sender cannot hold the capacity.
- Routes: the paths of this project's app (bentos.serving.app) go to it directly, ahead of
  BentoML's router; everything else (probes, BentoML's UI and schema) to BentoML.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson

from bentos.serving.metrics import Metrics
from bentos.serving.protocol import GONE

_STATIC = {
    "/predict",
    "/predict_edge",
    "/models",
    "/openapi.json",
    "/docs.json",
    "/metrics",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
}
_MODEL = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?(/ready|/infer)?$")
# A model's training report and its files: any rest of the path goes to the app, whose one
# check answers a name that is not a file of the report with a JSON 404.
_REPORT = re.compile(r"/models/[^/]+/report(/.*)?", re.DOTALL)
# BentoML's own paths, labelled as themselves; any other path is "unmatched".
_BENTOML = {"/", "/livez", "/readyz", "/healthz", "/schema.json"}


def route_of(path: str) -> tuple[str, bool]:
    """(the route template of `path`, whether this project's app serves it)."""
    if path in _STATIC:
        return path, True
    if path.startswith("/v2/models/"):
        m = _MODEL.match(path)
        if m:
            versioned = "/versions/{version}" if m.group(1) else ""
            return f"/v2/models/{{model}}{versioned}{m.group(2) or ''}", True
    if path.startswith("/models/"):
        m = _REPORT.fullmatch(path)
        if m:
            return "/models/{name}/report" + ("/{file}" if m.group(1) is not None else ""), True
    if path in _BENTOML:
        return path, False
    if path.startswith("/static_content/"):
        return "/static_content/{file}", False
    return "unmatched", False


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    content = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


_WHAT = {404: "no such route", 405: "method not allowed", 500: "internal error (logged)"}


class JsonErrors:
    """ASGI middleware for the whole service: the framework's plain-text 404/405 (a path no
    route matches, such as /v2/models/%0A/infer) and 500 become {"error": ...} like every other
    rejection. Everything else passes through untouched."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status: list[int] = []

        async def send_json_errors(message: dict) -> None:
            # Headers are looked at only for a 404/405: every other response passes untouched.
            if message["type"] == "http.response.start" and message["status"] in (404, 405, 500):
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/plain"):
                    status.append(message["status"])
                    return
            elif status:
                if message.get("more_body"):
                    return
                what = _WHAT[status[0]]
                body = orjson.dumps({"error": f"{what}: {scope['method']} {scope['path']!r}"})
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": status[0], "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_json_errors)


class SpreadConnections:
    """Ask a keep-alive client to reconnect (`Connection: close`) after every `every`-th
    response of this worker.

    Why: the workers share one listening socket, and the worker that wakes first accepts every
    connection waiting, so 16 clients that connect at once often all land on one worker while
    the other sits idle: half the pod's throughput, for as long as the connections live
    (BENCHMARKS.md, keep-alive connections). A reconnecting client goes to whichever worker is free
    to accept, which moves connections off the busy one. The same holds between pods: a
    connection that never closes never reaches a pod the autoscaler added. nginx does the
    same with `keepalive_requests`.
    """

    def __init__(self, app: Any, every: int = 100):
        if every <= 0:
            raise ValueError(f"every must be positive, got {every}")
        self.app = app
        self.every = every
        self._responses = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self._responses += 1
        if self._responses % self.every:
            return await self.app(scope, receive, send)

        async def send_closing(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [*(message.get("headers") or ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)


class Observe:
    """Count and time every request by route template, in `state.metrics` once the worker has
    made them (bentos.serving.metrics: in each worker process, not at import)."""

    def __init__(self, app: Any, state: Any):
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        metrics: Metrics | None = getattr(self.state, "metrics", None)
        if scope["type"] != "http" or metrics is None:
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [0]

        async def observed(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route, _ = route_of(scope["path"])
            # An answer the client left before getting is dropped (bentos.serving.protocol).
            code = 499 if scope.get(GONE) else status[0] or 500
            metrics.observe("http", route, code, time.perf_counter() - t0)


class Admission:
    """A POST's body must arrive within `body_timeout` seconds (else a 408), and only then does
    the request take one of `max_concurrency` slots for model work (a 429 when none is free).

    Why here: BentoML's own concurrency limit counts a request from its headers, so senders
    that trickle their bodies held every slot until the request timeout (docs/service-design.md);
    a request is counted here only once it can be worked on.
    """

    def __init__(self, app: Any, body_timeout: float, max_concurrency: int, max_body_bytes: int):
        self.app = app
        self.body_timeout = body_timeout
        self.max_concurrency = max_concurrency
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        messages: list[dict] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        # The client went away. The answer goes nowhere (the server drops what
                        # is sent to a closed connection) but ends the request: BentoML's
                        # TimeoutMiddleware, outside this one, waits for a response until its
                        # timeout, and a stop waits for it (30 s); and the metrics count it.
                        return await _send_json(send, 499, {"error": "the client went away"})
                    size += len(message.get("body", b""))
                    if size > self.max_body_bytes:
                        break  # the app refuses it with a 413, from what arrived
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            seconds = self.body_timeout
            return await _send_json(
                send, 408, {"error": f"the request body did not arrive within {seconds:g} s"}
            )
        if scope.get(GONE):  # its client left while the body arrived: no work for no one
            return await _send_json(send, 499, {"error": "the client went away"})
        if self.in_flight >= self.max_concurrency:
            return await _send_json(
                send,
                429,
                {"error": f"more than {self.max_concurrency} requests in flight; retry later"},
            )
        self.in_flight += 1
        replay = iter(messages)

        async def replayed() -> dict:
            message = next(replay, None)
            return message if message is not None else await receive()

        try:
            await self.app(scope, replayed, send)
        finally:
            self.in_flight -= 1


class Routes:
    """This project's paths to its own app (bentos.serving.app), the rest to BentoML's router.

    Why: BentoML's router puts its `@bentoml.api` routes before a mounted app, and a request
    through them runs at about half the rate (BENCHMARKS.md); the `@bentoml.api` methods stay
    for BentoML's clients and `bentoml.depends`, which call the same paths over HTTP.
    """

    def __init__(self, app: Any, ours: Any):
        self.app = app
        self.ours = ours

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # BentoML's own clients between services (bentoml.depends) send other encodings than
        # JSON to the @bentoml.api routes: BentoML decodes those and calls the method.
        if (
            scope["type"] == "http"
            and route_of(scope["path"])[1]
            and (scope["path"] not in _NATIVE or _is_json(scope))
        ):
            return await self.ours(scope, receive, send)
        return await self.app(scope, receive, send)


_NATIVE = {"/predict", "/predict_edge"}  # the routes of the @bentoml.api methods (service.py)


def _is_json(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.startswith(b"application/json")
    return True  # no content type: read as JSON, as curl's -d sends it


def install(service: Any, app: Any, settings: Any) -> None:
    """The service's middlewares, outermost first (docs/service-design.md, "The request path"),
    on a BentoML service class whose own app is `app` and whose settings are `settings`
    (bentos.settings.ServingSettings): service.py's list, which the benchmarks' no-op ceiling
    installs too."""
    service.add_asgi_middleware(JsonErrors)
    service.add_asgi_middleware(SpreadConnections, every=settings.keepalive_requests)
    service.add_asgi_middleware(Observe, state=app.state)
    service.add_asgi_middleware(
        Admission,
        body_timeout=settings.body_timeout_seconds,
        max_concurrency=settings.max_concurrency,
        max_body_bytes=settings.max_body_bytes,
    )
    service.add_asgi_middleware(Routes, ours=app)
