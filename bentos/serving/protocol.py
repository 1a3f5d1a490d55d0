"""uvicorn's HTTP/1.1 protocol (httptools), mended for clients that pipeline requests and leave.

uvicorn (0.54) reads pipelined requests ahead and answers them one at a time; when the
connection is lost it marks only the newest request it has read as disconnected. The request
being answered is an older one, so its answer was written to the closed connection: each such
request logged "Exception in ASGI application" with a traceback (RuntimeError: unable to
perform operation on <TCPTransport closed=True>), a server error for what is the client's
leaving (docs/reliability.md, "Slow and vanishing clients"). Here the request being answered is
marked too: its answer is dropped as uvicorn drops any answer to a closed connection, the
metrics count it as `client_gone` (bentos.serving.middleware.Front reads GONE), and the
requests still queued behind it, which uvicorn never starts once the connection is closed, are
let go.

It also lets the service's middleware answer its hot routes ahead of every other layer
(`serve_first`, bentos.serving.middleware.Front): a request it takes starts its task with Front
as the application, not with the stack of middleware around BentoML's app.

`install()` puts it in place of uvicorn's automatic choice for every server this process starts
afterwards; BentoML's workers start theirs after importing service.py, which calls it.
"""

from __future__ import annotations

from typing import Any

# Set in a request's ASGI scope when its client left before its answer was sent.
GONE = "bentos.client_gone"
# What answers some requests ahead of the application's layers: `takes(scope)` says which, and
# `first(scope, receive, send)` answers them (bentos.serving.middleware.Front, once built).
_first: Any = None


def serve_first(front: Any) -> None:
    global _first
    _first = front


def install() -> None:
    import uvicorn.protocols.http.auto as auto
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    if auto.AutoHTTPProtocol is not HttpToolsProtocol:
        return  # uvicorn's h11 protocol (without httptools) has no such queue; it stays

    class PipelineAwareProtocol(HttpToolsProtocol):
        _answering: Any = None

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            self._answering = cycle
            first = _first
            if first is not None and first.takes(cycle.scope):
                app = first.first
            super()._start_asgi_task(cycle, app)

        def connection_lost(self, exc: Exception | None) -> None:
            cycle = self._answering
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.scope[GONE] = True
                cycle.message_event.set()  # a receive() waiting for its body ends
            self.pipeline.clear()
            super().connection_lost(exc)

    auto.AutoHTTPProtocol = PipelineAwareProtocol
