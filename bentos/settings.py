"""Every setting of every process, one typed class per process, read once from the environment
at start-up (in Kubernetes, from the ConfigMaps the manifests generate).

Config flows one way: ConfigMap -> environment -> these classes -> command-line defaults. Only
this module and the model store (bentos.models: BENTO_PATH) read the environment. A value that
does not fit is refused once, here, by `load`, with a SettingsError naming the variable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bentos.errors import SettingsError

# How the forest can run (bentos.runners.RandomForestRunner).
RF_BACKENDS = ("packed", "sklearn")
RFBackend = Literal["packed", "sklearn"]
Positive = Annotated[int, Field(gt=0)]

_FROZEN: dict[str, Any] = {"frozen": True, "extra": "ignore"}


class ModelSettings(BaseSettings):
    """Which registered models a process serves or scores with."""

    model_config = SettingsConfigDict(env_prefix="BENTOS_", **_FROZEN)

    # Model tags; the Bento pins the versions it was built with. With a registry, the pod's own
    # store holds the champions its init container pulled, and :latest names them.
    rf_model: str = "rf-classifier:latest"
    tflite_model: str = "tflite-classifier:latest"
    # The model registry (bentos.registry), any fsspec URL; none: the Bento's own models.
    registry: str | None = None


class ServingSettings(ModelSettings):
    """The online service: `bentoml serve` (service.py), and the models of the gRPC server."""

    # Rows one request may carry; more is a 400 (the batch job is for large tables).
    max_rows: Positive = 1000
    # Bytes one request body may have; more is a 413, refused before the body is read whole.
    max_body_bytes: Positive = 1 << 20
    # Adaptive batching, per model and worker: rows merged into one model call, and how long a
    # request may queue behind a busy model before it is refused with 503 (bentos.serving.batching).
    max_batch_size: Positive = 256
    max_latency_ms: Positive = 2000
    # How the forest runs online; chosen by measurement (BENCHMARKS.md, "Choices").
    rf_backend: RFBackend = "packed"
    # The garbage collector's first threshold in serving processes (bentos.serving.runtime).
    gc_gen0_threshold: Positive = 50_000
    # Every this-many responses a worker closes the connection it answered on, so keep-alive
    # clients spread over the workers and new pods (bentos.serving.middleware).
    keepalive_requests: Positive = 100
    # Requests each worker works on at once; past it, an immediate 429. A request counts only
    # once its body has arrived, which it must within body_timeout_seconds (else a 408).
    max_concurrency: Positive = 64
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0


class GrpcSettings(BaseSettings):
    """The gRPC server (`python -m bentos.serving.grpc`): where it listens, and how long calls in
    flight may finish after SIGTERM; its models and limits are the service's (`serving`)."""

    model_config = SettingsConfigDict(env_prefix="BENTOS_GRPC_", **_FROZEN)

    host: str = "0.0.0.0"
    port: Annotated[int, Field(gt=0, lt=65536)] = 3001
    grace_seconds: Annotated[float, Field(gt=0)] = 25.0
    # Prometheus /metrics of the gRPC server (the HTTP server serves its own on its port).
    metrics_port: Annotated[int, Field(gt=0, lt=65536)] = 3002
    # Processes on the one port (SO_REUSEPORT), as the HTTP service has two workers.
    workers: Annotated[int, Field(gt=0, le=64)] = 2
    # A connection is closed (GOAWAY, calls in flight finish) after this long, so that
    # long-lived client channels spread over the workers and over new pods.
    max_connection_age_seconds: Annotated[float, Field(gt=0)] = 60.0
    # What clients that hold calls open may cost (docs/reliability.md, "Slow and vanishing
    # clients"): a call's message must arrive within message_timeout_seconds (else
    # DEADLINE_EXCEEDED; the HTTP door's body timeout), and only then counts against the
    # service's max_concurrency. Of the calls waiting for their message a worker keeps
    # max_waiting_calls (each costs about 24 KiB), dropping the one that has waited longest
    # for a new one; calls at once on one connection (more are refused with REFUSED_STREAM);
    # connections at once per worker (about 18 KiB each; more are closed as they come); a
    # connection without calls is closed after idle_timeout_seconds.
    message_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    max_waiting_calls: Positive = 4096
    max_streams_per_connection: Annotated[int, Field(gt=0, le=65536)] = 100
    max_connections: Positive = 2048
    idle_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    serving: ServingSettings = Field(default_factory=ServingSettings, exclude=True)


class LogSettings(BaseSettings):
    """How every process logs (bentos.logs): the server, the gRPC server, the jobs, the CLI."""

    model_config = SettingsConfigDict(env_prefix="BENTOS_LOG_", **_FROZEN)

    # auto: plain text on a terminal, one JSON object per line otherwise (a pod's log).
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class BatchSettings(BaseSettings):
    """The batch job (`python -m jobs.batch_predict`), one shard per run."""

    model_config = SettingsConfigDict(env_prefix="BENTOS_BATCH_", **_FROZEN)

    input: str | None = None  # CSV/Parquet file, folder or glob; any fsspec URL
    output: str | None = None  # the output folder; any fsspec URL
    model: Literal["rf", "edge"] = "rf"
    chunk_rows: Positive = 65536
    # The packed forest, as online: the fastest end to end too (docs/batch.md, "Figures").
    rf_backend: RFBackend = "packed"
    # Chunks validated and predicted at once, each in a thread; none: the CPUs this process may
    # use (its affinity and cgroup quota: in Kubernetes, the container's CPU limit).
    threads: Positive | None = None
    max_reject_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    # Input columns copied beside each prediction, comma-separated; none: the identifier
    # columns the model saw in training, when the input has them.
    keep: str | None = None
    # Kubernetes sets the index in an Indexed Job; the manifest sets the count to `completions`.
    shard_index: int = Field(0, ge=0, validation_alias="JOB_COMPLETION_INDEX")
    shard_count: int = Field(1, gt=0, validation_alias="BENTOS_SHARD_COUNT")
    rf_model: str = Field(ModelSettings().rf_model, validation_alias="BENTOS_RF_MODEL")
    tflite_model: str = Field(ModelSettings().tflite_model, validation_alias="BENTOS_TFLITE_MODEL")
    # Pull its champions before scoring (a pod's init container does it in Kubernetes).
    registry: str | None = Field(None, validation_alias="BENTOS_REGISTRY")
    # A Prometheus Pushgateway (http://host:9091) the job pushes its figures to (bentos.jobmetrics).
    pushgateway: str | None = Field(None, validation_alias="BENTOS_PUSHGATEWAY")


class PredictionLogSettings(BaseSettings):
    """The prediction log (bentos.monitoring.predlog) of the HTTP service, the gRPC server and
    the batch job: sampled predictions written as Parquet parts for the monitor to read."""

    model_config = SettingsConfigDict(env_prefix="BENTOS_PREDICTION_LOG_", **_FROZEN)

    # Any fsspec URL (a folder, s3://bucket/log); none: no log.
    url: str | None = Field(None, validation_alias="BENTOS_PREDICTION_LOG")
    # The share of requests (batch: of rows) logged, whole requests at a time.
    sample: Annotated[float, Field(ge=0, le=1)] = 1.0
    # Rows held for writing at most; past it, records are dropped and counted, never waited for.
    buffer_rows: Positive = 100_000
    # A part is written when it has this many rows or its first row is this old: a killed
    # process loses at most that; a stopped one writes what it holds.
    part_rows: Positive = 50_000
    part_seconds: Annotated[float, Field(gt=0)] = 60.0


class MonitorSettings(BaseSettings):
    """The drift check (`python -m jobs.monitor`, `bentos monitor`), a CronJob in prod."""

    model_config = SettingsConfigDict(env_prefix="BENTOS_MONITOR_", **_FROZEN)

    # The prediction log to read: the one the servers write by default.
    log: str | None = Field(None, validation_alias="BENTOS_PREDICTION_LOG")
    since: str = "24h"  # the window: this long back from now (s, m, h or d)
    # Where each run writes its report (a folder per run); none: LOG/_reports/.
    reports: str | None = None
    registry: str | None = Field(None, validation_alias="BENTOS_REGISTRY")
    pushgateway: str | None = Field(None, validation_alias="BENTOS_PUSHGATEWAY")
    # Accuracy on delayed labels (`python -m jobs.evaluate`): the labels' table, the key that
    # joins them to the logged rows, their label column (none: the models' target), how far
    # a metric may fall below its hold-out value, and the periods the report shows.
    labels: str | None = None
    key: str = "request_id"
    label_column: str | None = None
    margin: Annotated[float, Field(ge=0, le=1)] = 0.05
    every: str = "1D"
    # Closing the loop (bentos.rollout): on a drift or an accuracy drop, start this CronJob now
    # as a Job in this namespace (the pod's own, from the downward API); the champion/challenger
    # gate of the retrain job still decides what is served.
    retrain_on_drift: bool = False
    retrain_cronjob: str = "retrain"
    namespace: str = "default"


class RetrainSettings(BaseSettings):
    """The retrain job (`python -m jobs.retrain`)."""

    model_config = SettingsConfigDict(env_prefix="BENTOS_RETRAIN_", **_FROZEN)

    data: str | None = None  # the labelled table, CSV or Parquet; any fsspec URL
    target: str | None = None  # its label column
    export: str | None = None  # where new model versions go as .bentomodel archives
    models: str = "rf,tflite"  # which models to retrain: rf, tflite or rf,tflite
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.7
    # Champion and challenger (bentos.training.evaluate): the registry, the labelled data both
    # are judged on (default: the held-out split of `data`), the metric and the margin by
    # which a challenger must do at least as well.
    registry: str | None = Field(None, validation_alias="BENTOS_REGISTRY")
    eval_data: str | None = None
    # None: macro F1 for a classifier, RMSE for a regression.
    metric: Literal["f1_macro", "accuracy", "rmse", "mae", "r2"] | None = None
    margin: Annotated[float, Field(ge=0, le=1)] = 0.0
    # After a promotion, the Deployment to roll (bentos.rollout); none: no rollout.
    rollout_deployment: str | None = None
    rollout_namespace: str | None = None
    pushgateway: str | None = Field(None, validation_alias="BENTOS_PUSHGATEWAY")
    # Column kinds named rather than inferred (bentos.training.flags): comma-separated names.
    categorical: str | None = None
    numeric: str | None = None
    datetime: str | None = None
    identifier: str | None = None
    ignore: str | None = None
    max_levels: Annotated[int, Field(ge=1)] = 1000
    min_level_count: Annotated[int, Field(ge=1)] = 5
    # Rare classes (bentos.training.pipeline): weights, and the gate against the majority class.
    class_weight: Literal["auto", "balanced", "none"] = "auto"
    min_lift: Annotated[float, Field(ge=0, le=1)] = 0.05
    # What the target makes (bentos.schema.task): None infers it; a regression's gate.
    task: Literal["classification", "regression"] | None = None
    min_r2: Annotated[float, Field(ge=-1, le=1)] = 0.1
    # Promote a challenger whose columns differ from the champion's (clients send the champion's).
    allow_schema_change: bool = False


S = TypeVar("S", bound=BaseSettings)
PROCESSES: tuple[type[BaseSettings], ...] = (
    ServingSettings,
    GrpcSettings,
    BatchSettings,
    RetrainSettings,
    LogSettings,
    PredictionLogSettings,
    MonitorSettings,
)


def load(cls: type[S]) -> S:
    """The settings of one process, from the environment, checked once: a SettingsError names
    every variable whose value does not fit, with what was allowed and what came."""
    try:
        return cls()
    except ValidationError as exc:
        owner = next((c for c in (*PROCESSES, ModelSettings) if c.__name__ == exc.title), cls)
        names = variables(owner)
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            problems.append(
                f"{names.get(field, field)}: {err['msg'].lower()}, got {err['input']!r}"
            )
        raise SettingsError("; ".join(problems)) from None


def variables(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> the environment variable it is read from (nested settings excluded)."""
    prefix = cls.model_config.get("env_prefix", "")
    out = {}
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            continue
        alias = field.validation_alias
        out[name] = alias if isinstance(alias, str) else prefix + name.upper()
    return out


def every_variable() -> dict[str, Any]:
    """Every variable any process reads, with its default."""
    out: dict[str, Any] = {}
    for cls in PROCESSES:
        for name, variable in variables(cls).items():
            out.setdefault(variable, cls.model_fields[name].default)
    return out
