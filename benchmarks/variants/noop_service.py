"""The framework's ceiling and the rungs of the request path's ladder (BENCHMARKS.md, "The
floor"): service.py's BentoML service shape with exactly its settings (2 workers, traffic,
metrics, logging, tracing, GC) and its middleware, whose /predict is a hot route as service.py's
is (bentos.serving.middleware.Front answers it from the body it read). It answers a constant
after `?step=`:

- none: nothing (`benchmarks.online`'s `noop` target, the ceiling);
- `parse`: the body parsed;
- `validate`: parsed and validated against the forest's schema, as /predict does;
- `walk`: and the rows run through the forest, by the core's batcher, as /predict does.

/predict itself adds the labels, the answer's JSON, the request id, the prediction log and the
model's metrics. Benchmark only; beside the floor of a bare ASGI app (benchmarks/variants/floor.py)
and BentoML's own layers (benchmarks/variants/framework.py).
"""

from __future__ import annotations

import bentoml
from starlette.applications import Starlette

from benchmarks.variants.framework import SERVICE
from bentos import logs
from bentos.runners import RandomForestRunner
from bentos.schema import parse_json
from bentos.serving import middleware, protocol
from bentos.serving.app import Answer
from bentos.serving.core import Core
from bentos.serving.metrics import bentoml_metrics
from bentos.serving.runtime import tune_gc
from bentos.settings import ServingSettings, load

SETTINGS = load(ServingSettings)

# As service.py sets up its processes: the one log format (uvicorn's access log unbuilt) and the
# mended HTTP protocol.
logs.configure("server", loggers=logs.SERVER_LOGGERS)
protocol.install()

BODY = b'{"predictions":[0],"probabilities":[[1.0,0.0,0.0]],"model":"noop"}'
ANSWER = Answer(200, BODY, [(b"content-type", b"application/json")])


async def noop(core: Core, scope: dict, body: bytes) -> Answer:
    step = scope["query_string"]
    if step:
        model = core.models["rf"]
        parsed = parse_json(body)
        if step != b"step=parse":
            x = model.runner.schema.validate_body(parsed, SETTINGS.max_rows, {})
            if step == b"step=walk":
                await core.infer(model, x)
    return ANSWER


app = Starlette()


@bentoml.service(name="noop", **SERVICE)  # service.py's settings
@bentoml.asgi_app(app, path="/")
class Noop:
    def __init__(self) -> None:
        app.state.metrics = bentoml_metrics()  # as service.py: Front counts every request
        # The forest as service.py serves it, for the rungs that use it (none does, by default).
        runner = RandomForestRunner(SETTINGS.rf_model, SETTINGS.rf_backend)
        app.state.core = Core({"rf": ("/predict", runner)}, SETTINGS)
        tune_gc(SETTINGS.gc_gen0_threshold)


# service.py's middleware, with the no-op as its one hot route.
middleware.install(Noop, app, SETTINGS, hot={"/predict": noop})
