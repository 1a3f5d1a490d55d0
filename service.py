"""The online service: both models, behind one BentoML service, over HTTP on port 3000.

The operations are BentoML's own `@bentoml.api` methods, typed by pydantic models generated
from each model's feature schema (bentos.serving.native), so that BentoML's clients,
`bentoml.depends` and the Swagger UI at / know them. Over HTTP, their routes and the Open
Inference Protocol's are answered by bentos.serving.app through the middleware below, ahead of
BentoML's router: the same answers, at the mounted app's speed (docs/service-design.md).

Why the runners live in the entry service's own workers rather than behind `bentoml.depends`:
a `bentoml.depends` hop with adaptive batching cost most of the throughput and added the
batching wait at one client, while the models themselves take microseconds to a few
milliseconds per call (docs/service-design.md). Each runner keeps its own adaptive batching,
in-process (bentos.serving.batching); nothing waits on a timer.
"""

import logging

import bentoml

from bentos import logs
from bentos.errors import ExitCode, ModelError
from bentos.models import schema_of
from bentos.monitoring import predlog
from bentos.runners import RandomForestRunner, TFLiteRunner
from bentos.serving import middleware, native, protocol
from bentos.serving.app import attach, create_app
from bentos.serving.core import Core
from bentos.serving.metrics import bentoml_metrics
from bentos.serving.runtime import tune_gc
from bentos.settings import ServingSettings, load

# BentoML has configured its logging by the time a server process imports this file: the one
# format replaces it (bentos.logs), in the main process and in each worker.
logs.configure("server", loggers=logs.SERVER_LOGGERS)
# Clients that pipeline requests and leave are not server errors (bentos.serving.protocol).
protocol.install()
SETTINGS = load(ServingSettings)
app = create_app()
# The API's types, from the schemas the models were trained with (read from the model store or
# the Bento's own models, without loading a model).
try:
    RF = native.api_types(schema_of(SETTINGS.rf_model), "Forest")
    EDGE = native.api_types(schema_of(SETTINGS.tflite_model), "Edge")
except ModelError as exc:  # one line and exit 4, as every command (`bentos serve` checks first)
    logging.getLogger("bentos.serving").error("%s", exc)
    raise SystemExit(ExitCode.MODEL) from None
RfRow, RfPrediction, EdgeRow, EdgePrediction = RF.row, RF.prediction, EDGE.row, EDGE.prediction


@bentoml.service(
    name="tabular-classifier",
    # One worker per core; the Kubernetes ConfigMap (BENTOML_CONFIG) overrides these.
    workers=2,
    # A request still running after 30 s gets a 504. How many may be in flight is this
    # project's own limit (BENTOS_MAX_CONCURRENCY, bentos.serving.middleware.Front):
    # BentoML's counts a request from its headers, so slow senders could hold every slot.
    traffic={"timeout": 30},
    # BentoML labels its request metrics by raw path (a path scan grows them without bound);
    # this project's metrics carry route templates (bentos.serving.metrics) and /metrics
    # serves them.
    metrics={"enabled": False},
    # A log line per request cost a large share of the throughput (BENCHMARKS.md, "Choices").
    # BENTOML_CONFIG can turn it back on.
    logging={"access": {"enabled": False}},
    # BentoML's OpenTelemetry middleware made a span for every request, exported nowhere unless
    # a tracing exporter is configured, and cost 1.29x the throughput of 64-row requests
    # (BENCHMARKS.md, "Choices": tracing). Every URL is excluded; to trace, set
    # tracing.exporter_type and tracing.excluded_urls in BENTOML_CONFIG (docs/observability.md).
    tracing={"excluded_urls": "."},
    http={"port": 3000},
)
class TabularClassifier:
    # Class attributes, so `bentoml build` packs these models into the Bento.
    rf_model = bentoml.models.BentoModel(SETTINGS.rf_model)
    tflite_model = bentoml.models.BentoModel(SETTINGS.tflite_model)

    def __init__(self) -> None:
        # Loading verifies each file's sha256; a failure here stops the worker loudly.
        app.state.metrics = bentoml_metrics()
        # By tag, through bentos.models: the pod's own store first (the registry's champions,
        # when its init container pulled them), else the models packed in the Bento.
        self.core = Core(
            {
                "rf": ("/predict", RandomForestRunner(SETTINGS.rf_model, SETTINGS.rf_backend)),
                "tflite": ("/predict_edge", TFLiteRunner(SETTINGS.tflite_model)),
            },
            SETTINGS,
            app.state.metrics,
            # The prediction log (bentos.monitoring), made in each worker; it writes what it
            # holds when the worker exits.
            predlog.from_settings(
                "http", app.state.metrics.prediction_log, app.state.metrics.prediction_log_cpu
            ),
        )
        attach(app, self.core)
        tune_gc(SETTINGS.gc_gen0_threshold)

    @bentoml.on_shutdown
    def _flush_prediction_log(self) -> None:
        # A stopping worker writes the predictions it holds, and its last turn's metrics:
        # BentoML's workers do not reach the interpreter's own exit hooks.
        app.state.metrics.flush()
        if self.core.log is not None:
            self.core.log.close()

    def __is_ready__(self) -> bool:
        return getattr(app.state, "core", None) is not None

    @bentoml.api(route="/predict")
    async def predict(self, instances: list[RfRow]) -> RfPrediction:
        """The RandomForest: a label and the class probabilities per row."""
        return await native.predict(self.core, "rf", instances, RF)

    @bentoml.api(route="/predict_edge")
    async def predict_edge(self, instances: list[EdgeRow]) -> EdgePrediction:
        """The TFLite model (run by ai-edge-litert, as on a device): the same answer's shape."""
        return await native.predict(self.core, "tflite", instances, EDGE)


# Outermost first (docs/service-design.md, "The request path").
middleware.install(TabularClassifier, app, SETTINGS)
