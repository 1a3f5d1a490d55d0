"""The prod Deployment's pod, from the real image: the `server` container (HTTP: JSON API, V2 REST,
probes, metrics) and the `grpc` container (V2 gRPC), each run as the manifest declares it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

import bentos
from bentos.runners import RandomForestRunner, TFLiteRunner
from bentos.training.data import load_builtin
from tests.support.held import HeldCalls, timed_calls
from tests.support.k8s import container, container_port, one

from .harness import render_overlay
from .pod import Pod, quantity_bytes

ROUTES = {"rf": "/predict", "tflite": "/predict_edge"}


@pytest.fixture(scope="module")
def objects(image, tmp_path_factory) -> list[dict]:
    return render_overlay(tmp_path_factory.mktemp("overlay"), image.ref)


@pytest.fixture(scope="module")
def pod(objects, tmp_path_factory):
    deployment = one(objects, "Deployment", "tabular-classifier")
    pod = Pod(objects, deployment, name="online", root=tmp_path_factory.mktemp("pod"))
    try:
        for name in ("server", "grpc"):
            pod.start(name)
        for started in pod.containers:
            started.wait_started()
        yield pod
    finally:
        pod.remove()


@pytest.fixture(scope="module")
def base_url(objects) -> str:
    server = container(one(objects, "Deployment", "tabular-classifier"), "server")
    return f"http://127.0.0.1:{container_port(server, 'http')}"


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Rows of every class, jittered so that they are not the training rows themselves."""
    x = load_builtin("iris").features.to_numpy()
    return np.round(x[::3] + np.random.default_rng(1).normal(0, 0.05, x[::3].shape), 3)


@pytest.fixture(scope="module")
def source_tree(trained) -> dict:
    """The same models run by this checkout's runners, in this process."""
    return {
        "rf": RandomForestRunner(trained.rf_tag, "packed"),
        "tflite": TFLiteRunner(trained.tflite_tag),
    }


def test_every_container_passes_its_readiness_and_liveness_probes(pod):
    for started in pod.containers:
        assert started.probe("readinessProbe"), started.name
        assert started.probe("livenessProbe"), started.name


@pytest.mark.parametrize("model", ["rf", "tflite"])
def test_json_api_answers_as_the_source_tree_does(pod, base_url, rows, source_tree, model):
    names = source_tree[model].schema.names
    body = {"instances": [dict(zip(names, map(float, r), strict=True)) for r in rows]}
    resp = httpx.post(base_url + ROUTES[model], json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    want = source_tree[model].predict_proba(rows)
    assert answer["model"] == source_tree[model].tag
    assert answer["predictions"] == source_tree[model].labels_for(want)
    np.testing.assert_array_equal(np.asarray(answer["probabilities"], np.float32), want)


def test_bad_input_is_a_400_naming_the_field(pod, base_url):
    resp = httpx.post(base_url + "/predict", json={"instances": [{"sepal_length": "x"}]})
    assert resp.status_code == 400
    assert "instances[0]" in resp.json()["error"]


def test_each_model_s_training_report_is_served_from_the_image(pod, base_url, source_tree):
    """The report travels inside the Bento with its model; the image serves the page and each
    picture it links, byte for byte the source tree's files."""
    import re
    from pathlib import Path

    for model, runner in source_tree.items():
        page = httpx.get(f"{base_url}/models/{model}/report/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        pictures = re.findall(r'<img[^>]+src="([^"]+)"', page.text)
        assert pictures, page.text[:500]
        for name in pictures:
            png = httpx.get(f"{base_url}/models/{model}/report/{name}")
            assert png.headers["content-type"] == "image/png", name
            assert png.content == (Path(runner.path) / "report" / name).read_bytes(), name


def test_every_v2_rest_route_answers(pod, base_url, rows, source_tree):
    meta = httpx.get(base_url + "/v2").json()
    assert meta["name"] == "bentos" and meta["version"] == bentos.__version__
    assert httpx.get(base_url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(base_url + "/v2/health/ready").json() == {"ready": True}
    client = thttp.InferenceServerClient(base_url.removeprefix("http://"))
    for model, runner in source_tree.items():
        version = runner.tag.split(":")[1]
        for path in (f"/v2/models/{model}", f"/v2/models/{model}/versions/{version}"):
            assert httpx.get(base_url + path).json()["versions"] == [version]
            assert httpx.get(base_url + path + "/ready").json() == {"name": model, "ready": True}
        for binary in (True, False):
            inp = thttp.InferInput("features", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows.astype(np.float32), binary_data=binary)
            out = thttp.InferRequestedOutput("probabilities", binary_data=binary)
            result = client.infer(model, [inp], outputs=[out])
            want = runner.predict_proba(rows.astype(np.float32))
            np.testing.assert_array_equal(result.as_numpy("probabilities"), want)


def test_metrics_count_the_requests_served_on_both_containers(pod, base_url, objects):
    httpx.post(base_url + "/predict", json={"instances": [{"sepal_length": 1.0}]})
    text = httpx.get(base_url + "/metrics").text
    assert 'bentos_requests_total{route="/predict",status="400",transport="http"}' in text
    grpc_ctr = container(one(objects, "Deployment", "tabular-classifier"), "grpc")
    tgrpc.InferenceServerClient(
        f"127.0.0.1:{container_port(grpc_ctr, 'grpc')}"
    ).get_server_metadata()
    grpc_metrics = f"http://127.0.0.1:{container_port(grpc_ctr, 'grpc-metrics')}/metrics"
    served = 'bentos_requests_total{route="ServerMetadata",status="200",transport="grpc"}'
    assert served in httpx.get(grpc_metrics).text


def test_grpc_container_answers_tritonclient(pod, objects, rows, source_tree):
    grpc_ctr = container(one(objects, "Deployment", "tabular-classifier"), "grpc")
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{container_port(grpc_ctr, 'grpc')}")
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "bentos" and meta.version == bentos.__version__
    for model, runner in source_tree.items():
        version = runner.tag.split(":")[1]
        assert client.get_model_metadata(model, version).versions == [version]
        x = rows.astype(np.float32)
        inp = tgrpc.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(model, [inp], outputs=[tgrpc.InferRequestedOutput("probabilities")])
        np.testing.assert_array_equal(result.as_numpy("probabilities"), runner.predict_proba(x))


def test_grpc_container_answers_within_a_second_while_a_thousand_calls_are_held(pod, objects):
    """Raw HTTP/2 connections that each send a ModelInfer call's headers and 5 bytes of its
    message, then wait (docs/reliability.md, "Slow and vanishing clients")."""
    spec = container(one(objects, "Deployment", "tabular-classifier"), "grpc")
    grpc_ctr = next(c for c in pod.containers if c.name == "grpc")
    address = f"127.0.0.1:{container_port(spec, 'grpc')}"
    client = tgrpc.InferenceServerClient(address)
    timed_calls(client)
    before = grpc_ctr.memory_bytes()
    with HeldCalls(address, connections=1000) as held:
        took, memory = [], []
        while held.held == 1000 or not took:  # until the message timeout drops them
            held.read(0.25)
            took.append(max(timed_calls(client)))
            memory.append(grpc_ctr.memory_bytes())
        held.read(1.0)
        assert held.statuses == {"4": 1000}, held.statuses  # DEADLINE_EXCEEDED
    client.close()
    assert len(took) >= 5 and max(took) < 1.0, took
    limit = quantity_bytes(spec["resources"]["limits"]["memory"])
    assert max(memory) - before < 100 << 20 and max(memory) < limit, (before, memory, limit)
