"""Metrics fit for production, on a real server: route templates rather than raw paths, each
model's inference time and rows per call, refusals by reason, and the same series on the gRPC
server's own metrics port, and the served model versions on both."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

import bentoml
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from tests.support.monitoring import scrape
from tests.support.strategies import ROW


def _identity(series: str) -> str:
    name, _, labels = series.partition("{")
    name = re.sub(r"_(bucket|count|sum|created)$", "", name)
    return name + "{" + re.sub(r'le="[^"]*",?', "", labels)


def test_ten_thousand_random_paths_add_only_a_handful_of_series(server):
    before = scrape(server.url + "/metrics")

    def scan(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return sum(
                client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code == 404
                for _ in range(1250)
            )

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(scan, range(8))) == 10_000
    after = scrape(server.url + "/metrics")
    # A histogram is a series per bucket: count each metric and label set once.
    new = {_identity(s) for s in after} - {_identity(s) for s in before}
    assert len(new) <= 6, sorted(new)
    assert not any(re.search(r"/[0-9a-f]{32}", s) for s in after), "a raw path became a label"
    unmatched = 'bentos_requests_total{route="unmatched",status="404",transport="http"}'
    assert after[unmatched] - before.get(unmatched, 0) == 10_000


def test_each_model_reports_inference_time_rows_per_call_and_refusals_by_reason(server):
    for route in ("/predict", "/predict_edge"):
        assert httpx.post(server.url + route, json={"instances": [ROW] * 3}).status_code == 200
    assert httpx.post(server.url + "/predict", json={"instances": [{"x": 1}]}).status_code == 400
    series = scrape(server.url + "/metrics")
    for model in ("rf", "tflite"):
        assert series[f'bentos_model_inference_seconds_count{{model="{model}"}}'] >= 1
        assert series[f'bentos_model_batch_rows_sum{{model="{model}"}}'] >= 3
    rejected = (
        'bentos_rejected_requests_total{reason="invalid_input",route="/predict",transport="http"}'
    )
    assert series[rejected] >= 1
    assert series['bentos_requests_total{route="/predict_edge",status="200",transport="http"}'] >= 1


def test_the_grpc_server_reports_the_same_metrics_on_its_own_port(grpc_server):
    client = tgrpc.InferenceServerClient(grpc_server.address)
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    inp = tgrpc.InferInput("features", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    client.infer("rf", [inp])
    series = scrape(grpc_server.metrics_url)
    assert series['bentos_requests_total{route="ModelInfer",status="200",transport="grpc"}'] >= 1
    assert series['bentos_model_inference_seconds_count{model="rf"}'] >= 1
    assert series['bentos_model_batch_rows_count{model="rf"}'] >= 1


def _created(tag: str) -> float:
    """The model's registration time in the store, unix seconds (BentoML records it in UTC)."""
    when = bentoml.models.get(tag).info.creation_time
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _model_versions(series: dict[str, float]) -> dict[tuple[str, str], float]:
    """(model, version) -> value of every bentos_model_created_timestamp_seconds series."""
    found = {}
    for key, value in series.items():
        name, _, labels = key.partition("{")
        if name == "bentos_model_created_timestamp_seconds":
            pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            assert set(pairs) == {"model", "version"}, key  # one series, not one per worker
            found[pairs["model"], pairs["version"]] = value
    return found


def test_both_servers_expose_the_served_versions_and_when_they_were_registered(
    server, grpc_server, trained
):
    """The model-version gauge: one series per served model, labelled with the version the
    server loaded (the session's pinned tags), valued at its registration time in the store:
    on the HTTP server (BentoML's multiprocess registry, 2 workers) and on the gRPC server."""
    expected = {
        ("rf", trained.rf_tag.split(":")[1]): _created(trained.rf_tag),
        ("tflite", trained.tflite_tag.split(":")[1]): _created(trained.tflite_tag),
    }
    served = httpx.get(server.url + "/models", timeout=30).json()
    assert {m["tag"] for m in served["models"]} == {trained.rf_tag, trained.tflite_tag}
    for url in (server.url + "/metrics", grpc_server.metrics_url):
        versions = _model_versions(scrape(url))
        assert set(versions) == set(expected), url
        for key, created in expected.items():
            assert versions[key] == pytest.approx(created, abs=1e-3), (url, key)
