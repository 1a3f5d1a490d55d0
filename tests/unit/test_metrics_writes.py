"""bentos.serving.metrics: the request path's increments are added up over a turn of the event
loop and written at its end, with the very values prometheus_client's own calls would write."""

from __future__ import annotations

import asyncio
import functools
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bentos.serving.metrics import _SECONDS, Metrics

DURATIONS = [0.0001, 0.0005, 0.0007, 0.003, 0.2, 0.5, 7.0, 11.0, 0.0005]


def _metrics() -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    made = [functools.partial(kind, registry=registry) for kind in (Counter, Histogram, Gauge)]
    return Metrics(*made), registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_turn_s_increments_are_written_at_its_end_as_prometheus_client_would():
    metrics, registry = _metrics()

    async def turn() -> float:
        for i, seconds in enumerate(DURATIONS):
            metrics.observe("http", "/predict", 200 if i % 3 else 400, seconds)
        # Not yet written: the turn is not over.
        held = _value(
            registry, "bentos_requests_total", transport="http", route="/predict", status="200"
        )
        await asyncio.sleep(0)
        return held

    assert asyncio.run(turn()) == 0.0
    assert (
        _value(registry, "bentos_requests_total", transport="http", route="/predict", status="200")
        == 6
    )
    assert (
        _value(
            registry,
            "bentos_rejected_requests_total",
            transport="http",
            route="/predict",
            reason="invalid_input",
        )
        == 3
    )

    # The histogram's every sample, as prometheus_client's own observe() writes them.
    expected = CollectorRegistry()
    hist = Histogram(
        "bentos_request_duration_seconds",
        "",
        ["transport", "route"],
        registry=expected,
        buckets=_SECONDS,
    )
    for seconds in DURATIONS:
        hist.labels("http", "/predict").observe(seconds)
    (family,) = expected.collect()
    samples = [x for x in family.samples if not x.name.endswith("_created")]
    assert len(samples) == len(_SECONDS) + 3  # its buckets, +Inf, count and sum
    for sample in samples:
        assert _value(registry, sample.name, **sample.labels) == sample.value, sample


def test_off_the_event_loop_an_increment_is_written_at_once():
    metrics, registry = _metrics()
    call = metrics.timed_model("rf", lambda x: x)

    def in_a_thread() -> None:
        call([1, 2, 3])

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert _value(registry, "bentos_model_batch_rows_count", model="rf") == 1
    assert _value(registry, "bentos_model_batch_rows_bucket", model="rf", le="4.0") == 1
    assert _value(registry, "bentos_model_batch_rows_bucket", model="rf", le="2.0") == 0
    metrics.observe("grpc", "Predict", 200, 0.01)  # no loop here either
    assert (
        _value(registry, "bentos_requests_total", transport="grpc", route="Predict", status="200")
        == 1
    )


def test_a_new_loop_in_the_same_thread_writes_the_old_loop_s_turn_first():
    metrics, registry = _metrics()
    loop = asyncio.new_event_loop()

    async def observe() -> None:
        metrics.observe("http", "/predict", 200, 0.01)

    loop.run_until_complete(observe())  # its turn's flush is left scheduled on this loop
    loop.close()
    asyncio.run(observe())
    assert (
        _value(registry, "bentos_requests_total", transport="http", route="/predict", status="200")
        == 2
    )
