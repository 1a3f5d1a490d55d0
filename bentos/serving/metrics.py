"""The servers' own Prometheus metrics, the same on HTTP and gRPC, labelled by route template (or
RPC name), never by raw path: a scan of random paths adds one series, not one per path.

- `bentos_requests_total{transport, route, status}` and
  `bentos_request_duration_seconds{transport, route}`: every request;
- `bentos_rejected_requests_total{transport, route, reason}`: refusals by reason (invalid input,
  not found, body timeout, too large, too many in flight, overloaded);
- `bentos_model_inference_seconds{model}` and `bentos_model_batch_rows{model}`: each model call
  (one call may serve several requests: bentos.serving.batching);
- `bentos_model_created_timestamp_seconds{model, version}`: when each served model was registered
  in its store (unix seconds), set once as the models load: the versions a pod serves, and their
  age (docs/observability.md);
- `bentos_unknown_categories_total{model, feature}`: values of a categorical feature outside its
  training levels, answered as the "other" level (features come from the schema: bounded);
- `bentos_prediction_log_rows_total{outcome}`: rows of the prediction log (bentos.monitoring)
  written, dropped (its buffer was full: the request path never waits) or failed (storage);
  `bentos_prediction_log_writer_cpu_seconds_total`: its writing thread's CPU, what the log costs
  the pod besides the request path's append.

The HTTP server registers them in BentoML's multiprocess registry (so /metrics adds up every
worker), the gRPC server in a registry of its own on its metrics port.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

REASONS = {
    400: "invalid_input",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "too_large",
    429: "too_many_in_flight",
    499: "client_gone",  # nginx's code: the client closed the connection before the answer
    503: "overloaded",
    504: "timeout",
}
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _observed(child: Any, amount: float) -> tuple[tuple[Any, float], tuple[Any, float]]:
    """A prometheus_client histogram child's observe(amount) as increments: its sum, and the
    first bucket whose upper bound holds the amount (as Histogram.observe does)."""
    bucket = child._buckets[bisect.bisect_left(child._upper_bounds, amount)]
    return (child._sum, amount), (bucket, 1.0)


class _TurnWrites:
    """The request path's increments, added up over one turn of the event loop and written at
    its end: one write per series a turn rather than one per observation.

    Why: in BentoML's multiprocess registry every increment is a locked write to an mmap'd file
    with a pid check, seven a one-row request (its counter, its histogram's sum and bucket, and
    the model call's two histograms), about 8% of a loaded worker's samples (BENCHMARKS.md,
    "The floor"). A turn answers several requests, whose increments mostly fall on the same
    series. Written with loop.call_soon, so a scrape (/metrics in this worker or another) sees
    them a turn later. Off the event loop (a model call in a worker thread), written at once.
    """

    def __init__(self) -> None:
        # Per thread: a thread with a loop of its own (a test's, say) has its own turn.
        self._local = threading.local()

    def add(self, *increments: tuple[Any, float]) -> None:
        """Each (value, amount): a prometheus_client value (a counter's, a bucket's, a sum's)
        += amount. One call for all of a request's, as this runs for every request."""
        loop = asyncio._get_running_loop()
        if loop is None:
            for value, amount in increments:
                value.inc(amount)
            return
        local = self._local
        pending: dict[Any, float] | None = getattr(local, "pending", None)
        if not pending or local.loop is not loop:
            if pending:  # a new loop in this thread: the old one's turn is over
                self.flush()
            pending = local.pending = {}
            local.loop = loop
            loop.call_soon(self.flush)
        get = pending.get
        for value, amount in increments:
            pending[value] = get(value, 0.0) + amount

    def flush(self) -> None:
        """Write what this thread's turn holds (the loop calls it; a stopping worker too)."""
        pending = getattr(self._local, "pending", None)
        if not pending:
            return
        self._local.pending = {}
        for value, amount in pending.items():
            value.inc(amount)


class Metrics:
    """`counter`, `histogram` and `gauge` make prometheus_client metrics in the registry to use."""

    def __init__(
        self,
        counter: Callable[..., Any],
        histogram: Callable[..., Any],
        gauge: Callable[..., Any],
    ):
        self.requests = counter(
            name="bentos_requests_total",
            documentation="Requests answered, by transport, route template and status",
            labelnames=["transport", "route", "status"],
        )
        self.request_seconds = histogram(
            name="bentos_request_duration_seconds",
            documentation="Time from a request's arrival to its answer",
            labelnames=["transport", "route"],
            buckets=_SECONDS,
        )
        self.rejected = counter(
            name="bentos_rejected_requests_total",
            documentation="Requests refused, by transport, route template and reason",
            labelnames=["transport", "route", "reason"],
        )
        self.model_seconds = histogram(
            name="bentos_model_inference_seconds",
            documentation="Time of one model call",
            labelnames=["model"],
            buckets=_SECONDS,
        )
        self.model_rows = histogram(
            name="bentos_model_batch_rows",
            documentation="Rows in one model call",
            labelnames=["model"],
            buckets=_ROWS,
        )
        self.model_created = gauge(
            name="bentos_model_created_timestamp_seconds",
            documentation="When the served model was registered in its store (unix seconds)",
            labelnames=["model", "version"],
            # BentoML's multiprocess registry: every worker sets the same value; `max` shows it
            # once per model and version rather than once per worker pid (the default, `all`).
            multiprocess_mode="max",
        )
        self.unknown = counter(
            name="bentos_unknown_categories_total",
            documentation="Categorical values outside the training levels, by model and feature",
            labelnames=["model", "feature"],
        )
        self.log_rows = counter(
            name="bentos_prediction_log_rows_total",
            documentation="Rows of the prediction log, by outcome: written, dropped, failed",
            labelnames=["outcome"],
        )
        for outcome in ("written", "dropped", "failed"):  # each series exists from the start
            self.log_rows.labels(outcome)
        self.log_cpu = counter(
            name="bentos_prediction_log_writer_cpu_seconds_total",
            documentation="CPU seconds of the prediction log's writing thread",
        )
        # (transport, route, status) -> that label set's series; routes are templates or RPC
        # names and statuses a handful, so this stays small.
        self._series: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._writes = _TurnWrites()
        self.flush = self._writes.flush

    def model_loaded(self, name: str, version: str, created: float) -> None:
        self.model_created.labels(name, version).set(created)

    def prediction_log(self, outcome: str, rows: int) -> None:
        self.log_rows.labels(outcome).inc(rows)

    def prediction_log_cpu(self, seconds: float) -> None:
        self.log_cpu.inc(seconds)

    def unknown_categories(self, model: str, counts: dict[str, int]) -> None:
        for feature, n in counts.items():
            self.unknown.labels(model, feature).inc(n)

    def observe(self, transport: str, route: str, status: int, seconds: float) -> None:
        key = (transport, route, status)
        series = self._series.get(key)
        if series is None:
            # Looked up once per label set: labels() takes a lock and builds its key each call.
            series = self._series[key] = (
                self.requests.labels(transport, route, str(status)),
                self.request_seconds.labels(transport, route),
                self.rejected.labels(transport, route, REASONS.get(status, f"status_{status}"))
                if status >= 400
                else None,
            )
        requests, request_seconds, rejected = series
        timed = _observed(request_seconds, seconds)
        if rejected is None:
            self._writes.add((requests._value, 1.0), *timed)
        else:
            self._writes.add((requests._value, 1.0), *timed, (rejected._value, 1.0))

    def timed_model(
        self, name: str, fn: Callable[[np.ndarray], np.ndarray]
    ) -> Callable[[np.ndarray], np.ndarray]:
        """`fn`, with each call's time and rows recorded under `name`."""
        seconds = self.model_seconds.labels(name)
        rows = self.model_rows.labels(name)

        add = self._writes.add

        def call(x: np.ndarray) -> np.ndarray:
            t0 = time.perf_counter()
            out = fn(x)
            add(*_observed(seconds, time.perf_counter() - t0), *_observed(rows, len(x)))
            return out

        return call


def bentoml_metrics() -> Metrics:
    """The metrics in BentoML's multiprocess registry (the HTTP workers)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    client = BentoMLContainer.metrics_client.get()
    return Metrics(client.Counter, client.Histogram, client.Gauge)


def latest_bentoml() -> tuple[bytes, str]:
    """/metrics: every worker's series, added up, in the exposition format."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    client = BentoMLContainer.metrics_client.get()
    return client.generate_latest(), client.CONTENT_TYPE_LATEST
