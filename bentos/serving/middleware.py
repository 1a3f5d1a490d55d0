"""ASGI middleware around the whole service (BentoML's own routes included).

- JsonErrors: the framework's plain-text 404/405 become JSON like every other rejection.
- SpreadConnections: every Nth response of a worker closes its connection, so that keep-alive
  clients spread again over the worker processes and, in Kubernetes, over new pods.
"""

from __future__ import annotations

from typing import Any

import orjson


class JsonErrors:
    """ASGI middleware for the whole service: the framework's plain-text 404/405 (a path no
    route matches, such as /v2/models/%0A/infer) become {"error": ...} like every other
    rejection. Everything else passes through untouched."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status: list[int] = []

        async def send_json_errors(message: dict) -> None:
            # Headers are looked at only for a 404/405: every other response passes untouched.
            if message["type"] == "http.response.start" and message["status"] in (404, 405):
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/plain"):
                    status.append(message["status"])
                    return
            elif status:
                if message.get("more_body"):
                    return
                what = "no such route" if status[0] == 404 else "method not allowed"
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
