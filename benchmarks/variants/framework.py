"""BentoML's own layers, the rung above the floor on the request path's ladder (BENCHMARKS.md,
"The floor"): the floor's bare ASGI app (benchmarks/variants/floor.py) mounted in a BentoML
service with service.py's settings (2 workers, traffic, metrics, logging, tracing), and no
middleware of this project: BentoML's worker, its Starlette app and middleware, its router and
the mount. Benchmark only: `benchmarks.online`'s `framework` target."""

from __future__ import annotations

import bentoml

from benchmarks.variants.floor import app
from bentos import logs
from bentos.serving import protocol

# As service.py sets up its processes: the one log format (uvicorn's access log unbuilt) and the
# mended HTTP protocol.
logs.configure("server", loggers=logs.SERVER_LOGGERS)
protocol.install()


# service.py's decorator's settings, but the models (and the port, which the benchmark gives):
# the variants' one copy.
SERVICE = {
    "workers": 2,
    "traffic": {"timeout": 30},
    "metrics": {"enabled": False},
    "logging": {"access": {"enabled": False}},
    "tracing": {"excluded_urls": "."},
}


@bentoml.service(name="framework", **SERVICE)
@bentoml.asgi_app(app, path="/")
class Framework:
    pass
