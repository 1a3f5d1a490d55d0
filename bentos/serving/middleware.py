"""The ASGI middleware around the whole service, BentoML's own routes included (`Front`), and the
route template of every path (`route_of`), by which its metrics are labelled and its requests
routed.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any

import orjson

from bentos.serving import protocol
from bentos.serving.app import (
    HOT,
    Answer,
    Call,
    answer,
    declared_too_large,
    failure,
    header,
    too_large,
)
from bentos.serving.deadlines import Deadline, Deadlines
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


async def _send_json(send: Any, status: int, body: dict[str, Any], close: bool = False) -> int:
    content = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    if close:
        headers.append(_CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
    return status


_WHAT = {404: "no such route", 405: "method not allowed", 500: "internal error (logged)"}
_CLOSE = (b"connection", b"close")
_NATIVE = {"/predict", "/predict_edge"}  # the routes of the @bentoml.api methods (service.py)


class Front:
    """The one middleware around the whole service (BentoML's own routes included):

    - Every request is counted and timed by route template (bentos.serving.metrics).
    - A POST's body must arrive within `body_timeout` seconds (else a 408), and only then does
      the request take one of the worker's `max_concurrency` slots for model work (else a 429):
      BentoML's own limit counts a request from its headers, so senders that trickle their
      bodies held every slot until the request timeout (docs/service-design.md).
      One timer per worker looks at the deadlines of the bodies still arriving (`_sweep`),
      each met within a tenth of the timeout or half a second, rather than a timer a request.
    - The hot routes (bentos.serving.app.HOT: the JSON API's and the Open Inference Protocol's
      predictions) are answered here, from the body already read: no framework between the
      server and the model. This project's other paths go to its own app (bentos.serving.app),
      ahead of BentoML's router, which puts its `@bentoml.api` routes before a mounted app;
      everything else (probes, BentoML's UI and schema, bodies BentoML's clients encode) goes to
      BentoML.
    - Every `every`-th response asks its keep-alive client to reconnect (`Connection: close`):
      the workers share one listening socket, and the one that wakes first accepts every
      connection waiting, so clients that connect at once often all land on one worker; a
      reconnecting client goes to whichever is free (BENCHMARKS.md, keep-alive connections), and
      between pods, to one the autoscaler added. nginx does the same with `keepalive_requests`.
    - The framework's plain-text 404/405/500 become {"error": ...} like every other rejection.

    Why one: five middlewares did these, each wrapping every request and every message in
    another coroutine and callback (BENCHMARKS.md, "The floor", has the ladder).
    """

    def __init__(
        self,
        app: Any,
        *,
        ours: Any,
        hot: dict[str, Call] = HOT,
        every: int = 100,
        body_timeout: float = 5.0,
        max_concurrency: int = 64,
        max_body_bytes: int = 1 << 20,
        service: str | None = None,
    ):
        if every <= 0:
            raise ValueError(f"every must be positive, got {every}")
        self.app = app
        self.ours = ours  # this project's Starlette app: its state holds the core and metrics
        self.hot = hot
        self.every = every
        self.body_timeout = body_timeout
        self.max_concurrency = max_concurrency
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0
        self._responses = 0
        self._deadlines = Deadlines(tick=min(body_timeout / 10, 0.5))
        self._core_made: Any = None
        self._metrics_made: Metrics | None = None
        # BentoML's request timeout, kept here for the requests served ahead of its layers.
        self.request_timeout: float | None = None
        if service is not None:
            self._go_first(service)

    def _go_first(self, service: str) -> None:
        """Serve the hot routes ahead of BentoML's own layers (its app's error middleware,
        OpenTelemetry's, its timeout, uvicorn's proxy headers), through the server's protocol
        (bentos.serving.protocol), when those layers would do nothing for them: BentoML's
        metrics, tracing exporter, access log, CORS and request limit all off, as service.py
        sets them (BENTOML_CONFIG may turn them on). Its timeout is kept here, cheaper. Why:
        they cost about a fifth of a one-row prediction (BENCHMARKS.md, "The floor")."""
        from bentoml._internal.configuration.containers import BentoMLContainer as bentoml

        traffic = bentoml.config.services.get()[service].get("traffic") or {}
        idle = not (
            bentoml.api_server_config.metrics.enabled.get()
            or bentoml.config.tracing.exporter_type.get()
            or bentoml.api_server_config.logging.access.enabled.get()
            or bentoml.http.cors.enabled.get()
            or traffic.get("max_concurrency")
        )
        if idle:
            self.request_timeout = traffic.get("timeout")
            protocol.serve_first(self)

    def _core(self) -> Any:
        """The app's core once the service has made it (it does not change afterwards)."""
        core = self._core_made
        if core is None:
            core = self._core_made = getattr(self.ours.state, "core", None)
        return core

    def _metrics(self) -> Metrics | None:
        metrics = self._metrics_made
        if metrics is None:
            metrics = self._metrics_made = getattr(self.ours.state, "metrics", None)
        return metrics

    def takes(self, scope: dict) -> bool:
        """Whether the request is one of the hot routes it answers itself (the protocol asks,
        before any other layer sees it)."""
        return scope["method"] == "POST" and self._hot(scope, *route_of(scope["path"])) is not None

    def _hot(self, scope: dict, route: str, ours: bool) -> Call | None:
        """The call that answers a POST to `route` here, if it is a hot route, the models are
        loaded and its body is JSON (BentoML decodes its clients' other encodings)."""
        call = self.hot.get(route) if ours else None
        if call is None or self._core() is None:
            return None
        return call if scope["path"] not in _NATIVE or _is_json(scope) else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await self._serve(scope, receive, send, None)

    async def first(self, scope: dict, receive: Any, send: Any) -> None:
        """A hot route's request, ahead of every other layer (`takes`), with BentoML's timeout."""
        await self._serve(scope, receive, send, self.request_timeout)

    async def _serve(self, scope: dict, receive: Any, send: Any, timeout: float | None) -> None:
        t0 = time.perf_counter()
        route, ours = route_of(scope["path"])
        self._responses += 1
        close = not self._responses % self.every
        task = asyncio.current_task()
        assert task is not None
        deadline = self._deadlines.arm(task, timeout or math.inf, 504)
        cancelling = task.cancelling()  # cancellations asked before this one's, if any
        status = 0
        try:
            if scope["method"] == "POST":
                status = await self._post(scope, receive, send, route, ours, close, deadline)
            else:
                status = await self._forward(scope, receive, send, ours, close, deadline)
        except asyncio.CancelledError:
            # Answered here only if the deadline alone cancelled it (as asyncio.timeout does):
            # a stop's cancellation, or BentoML's timeout's, goes on.
            if not deadline.expired or task.uncancel() > cancelling:
                raise
            if deadline.code == 408:
                message = f"the request body did not arrive within {self.body_timeout:g} s"
            else:
                message = f"the request was not answered within {timeout:g} s"
            status = await _send_json(send, deadline.code, {"error": message}, close)
        finally:
            self._deadlines.drop(task)
            metrics = self._metrics()
            if metrics is not None:
                # An answer the client left before getting is dropped (bentos.serving.protocol).
                # An answer that started and then failed counts with the status it started.
                code = 499 if scope.get(GONE) else status or deadline.status or 500
                metrics.observe("http", route, code, time.perf_counter() - t0)

    async def _post(
        self,
        scope: dict,
        receive: Any,
        send: Any,
        route: str,
        ours: bool,
        close: bool,
        deadline: Deadline,
    ) -> int:
        messages, gone = await self._body(receive, deadline)
        # The client went away, before or while its body arrived. The answer goes nowhere (the
        # server drops what is sent to a closed connection) but ends the request: BentoML's
        # TimeoutMiddleware, outside this one, waits for a response until its timeout, and a
        # stop waits for it; and the metrics count it.
        if gone or scope.get(GONE):
            deadline.disarm(499)
            return await _send_json(send, 499, {"error": "the client went away"}, close)
        if self.in_flight >= self.max_concurrency:
            deadline.disarm(429)
            message = f"more than {self.max_concurrency} requests in flight; retry later"
            return await _send_json(send, 429, {"error": message}, close)
        self.in_flight += 1
        try:
            call = self._hot(scope, route, ours)
            if call is not None:
                body = b"".join([m.get("body", b"") for m in messages])
                refusal = declared_too_large(header(scope, b"content-length"), self.max_body_bytes)
                if refusal is None and len(body) > self.max_body_bytes:
                    refusal = too_large(self.max_body_bytes)
                if refusal is not None:
                    reply = failure(refusal, scope)
                else:
                    reply = await answer(call, self._core(), scope, body)
                deadline.disarm(reply.status)
                return await _send_answer(send, reply, close)
            replay = iter(messages)

            async def replayed() -> dict:
                message = next(replay, None)
                return message if message is not None else await receive()

            return await self._forward(scope, replayed, send, ours, close, deadline)
        finally:
            self.in_flight -= 1

    async def _body(self, receive: Any, deadline: Deadline) -> tuple[list[dict], bool]:
        """The body's messages, up to the one past the byte limit (the app refuses it with a 413
        from what arrived), and whether the client left. Until then `deadline` is the body's."""
        messages: list[dict] = []
        size = 0
        request_at = deadline.at
        body_at = time.monotonic() + self.body_timeout
        if body_at < request_at:
            deadline.at, deadline.code = body_at, 408
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, True
            size += len(message.get("body", b""))
            if size > self.max_body_bytes or not message.get("more_body", False):
                deadline.at, deadline.code = request_at, 504
                return messages, False

    async def _forward(
        self, scope: dict, receive: Any, send: Any, ours: bool, close: bool, deadline: Deadline
    ) -> int:
        """To this project's app or to BentoML, through one callback that notes the status, adds
        `Connection: close` when asked, and turns the framework's plain-text 404/405/500 (a path
        no route matches, such as /v2/models/%0A/infer) into JSON."""
        # BentoML's own clients between services (bentoml.depends) send other encodings than
        # JSON to the @bentoml.api routes: BentoML decodes those and calls the method.
        mine = ours and (scope["path"] not in _NATIVE or _is_json(scope))
        status: list[int] = [0, 0]  # the status, and the one held back to become JSON

        async def respond(message: dict) -> None:
            if message["type"] == "http.response.start":
                deadline.disarm(message["status"])
                status[0] = message["status"]
                if status[0] in (404, 405, 500) and _plain(message):
                    status[1] = status[0]
                    return
                if close:
                    message = {**message, "headers": [*(message.get("headers") or ()), _CLOSE]}
            elif status[1]:
                if message.get("more_body"):
                    return
                what = _WHAT[status[1]]
                body = {"error": f"{what}: {scope['method']} {scope['path']!r}"}
                await _send_json(send, status[1], body, close)
                return
            await send(message)

        await (self.ours if mine else self.app)(scope, receive, respond)
        return status[0]


def _plain(start: dict) -> bool:
    for name, value in start.get("headers") or ():
        if name == b"content-type":
            return value.startswith(b"text/plain")
    return False


def _is_json(scope: dict) -> bool:
    value = header(scope, b"content-type")
    return value is None or value.startswith(b"application/json")  # none: as curl -d sends


async def _send_answer(send: Any, reply: Answer, close: bool) -> int:
    headers = [*reply.headers, (b"content-length", str(len(reply.content)).encode())]
    if close:
        headers.append(_CLOSE)
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.content})
    return reply.status


def install(service: Any, app: Any, settings: Any, hot: dict[str, Call] = HOT) -> None:
    """The service's middleware (docs/service-design.md, "The request path") on a BentoML
    service class whose own app is `app` and whose settings are `settings`
    (bentos.settings.ServingSettings): service.py's, which the benchmarks' no-op ceiling
    installs too, with hot routes of its own."""
    service.add_asgi_middleware(
        Front,
        ours=app,
        hot=hot,
        every=settings.keepalive_requests,
        body_timeout=settings.body_timeout_seconds,
        max_concurrency=settings.max_concurrency,
        max_body_bytes=settings.max_body_bytes,
        service=service.name,
    )
