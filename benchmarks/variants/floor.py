"""The machine's floor for one request: a bare ASGI app (no framework, no middleware, no model)
that reads the body and answers a constant JSON, served by uvicorn with uvloop and httptools,
2 workers, no access log (benchmarks.servers.uvicorn_serve). What Python's HTTP stack allows
here; `benchmarks.online`'s `floor` target. Benchmark only."""

from __future__ import annotations

from typing import Any

BODY = b'{"predictions":[0],"probabilities":[[1.0,0.0,0.0]],"model":"floor"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole body, as /predict reads it
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
