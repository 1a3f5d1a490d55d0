"""The online service, served for real by `bentoml serve` and called over HTTP."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest

from bentos.runners import RandomForestRunner, TFLiteRunner
from bentos.training.data import load_builtin

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _iris_instances(n: int | None = None) -> tuple[list[dict], np.ndarray]:
    features = load_builtin("iris").features
    if n is not None:
        features = features.iloc[:n]
    return features.to_dict(orient="records"), features.to_numpy()


@pytest.mark.parametrize(
    ("route", "runner_cls", "tag_attr"),
    [("/predict", RandomForestRunner, "rf_tag"), ("/predict_edge", TFLiteRunner, "tflite_tag")],
)
def test_predictions_equal_the_registered_model_called_directly(
    server, trained, route, runner_cls, tag_attr
):
    instances, x = _iris_instances(50)
    resp = httpx.post(server.url + route, json={"instances": instances})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    runner = runner_cls(getattr(trained, tag_attr))
    proba = runner.predict_proba(x)
    assert body["model"] == getattr(trained, tag_attr)
    assert body["predictions"] == runner.labels_for(proba)
    np.testing.assert_allclose(body["probabilities"], proba, atol=1e-6)


def test_models_endpoint_lists_tags_schema_labels_and_metrics(server, trained):
    body = httpx.get(server.url + "/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["rf"]["tag"] == trained.rf_tag
    assert by_name["tflite"]["tag"] == trained.tflite_tag
    for model in by_name.values():
        assert model["labels"] == ["setosa", "versicolor", "virginica"]
        assert [f["name"] for f in model["schema"]["features"]] == list(ROW)
        assert 0 < model["metrics"]["accuracy"] <= 1
    assert by_name["rf"]["metrics"] == trained.rf_metrics
    assert by_name["tflite"]["quantization"] == "dynamic"
    assert by_name["rf"]["backend"] == "packed"  # the default: no pickle online


def test_probes_answer_on_bentoml_paths(server):
    assert httpx.get(server.url + "/livez").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200


def _request_count(server, endpoint: str, code: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("bentos_requests_total{")
            and f'route="{endpoint}"' in line
            and f'status="{code}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_prediction_requests(server):
    before = _request_count(server, "/predict", "200")
    for _ in range(3):
        assert httpx.post(server.url + "/predict", json={"instances": [ROW]}).status_code == 200
    assert _request_count(server, "/predict", "200") == before + 3


def _bad(server, body, route="/predict", **kwargs) -> tuple[int, dict]:
    if not isinstance(body, dict):
        resp = httpx.post(server.url + route, content=body, **kwargs)
    else:
        resp = httpx.post(server.url + route, json=body, **kwargs)
    return resp.status_code, resp.json()


BAD_INPUT = {
    "missing feature": (
        {"instances": [ROW, {k: v for k, v in ROW.items() if k != "petal_width"}]},
        "instances[1]: missing feature(s) 'petal_width'",
    ),
    "unknown feature": (
        {"instances": [{**ROW, "colour": 1.0}]},
        "instances[0]: unknown feature(s) 'colour'",
    ),
    "wrong type": (
        {"instances": [ROW, ROW, {**ROW, "sepal_width": "3.5"}]},
        "instances[2].sepal_width: expected a number, got string '3.5'",
    ),
    "boolean": (
        {"instances": [{**ROW, "petal_length": True}]},
        "instances[0].petal_length: expected a number, got boolean True",
    ),
    "infinity": (
        '{"instances": [{"sepal_length": 5.1, "sepal_width": Infinity, "petal_length": 1.4, "petal_width": 0.2}]}',
        "instances[0].sepal_width: non-finite value inf",
    ),
    "huge number": (
        '{"instances": [{"sepal_length": 1e999, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}',
        "instances[0].sepal_length: non-finite value inf",
    ),
    "empty instances": ({"instances": []}, "'instances' is empty"),
    "instances not a list": (
        {"instances": ROW},
        "'instances' must be a list of objects, got object",
    ),
    "row not an object": ({"instances": [[5.1, 3.5, 1.4, 0.2]]}, "instances[0] must be an object"),
    "no instances": ({"rows": [ROW]}, 'the body must be a JSON object {"instances"'),
    "extra top-level field": ({"instances": [ROW], "x": 1}, "unknown top-level field(s) 'x'"),
    "too many rows": ({"instances": [ROW] * 51}, "'instances' has 51 rows; at most 50"),
    "malformed JSON": ('{"instances": [', "malformed JSON"),
    "not UTF-8": (b"\xff\xfe{", "malformed JSON"),
    "empty body": (b"", "malformed JSON"),
}


@pytest.mark.parametrize("route", ["/predict", "/predict_edge"])
@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_a_400_naming_row_and_field(server, route, case):
    body, message = BAD_INPUT[case]
    status, data = _bad(server, body, route, headers={"content-type": "application/json"})
    assert status == 400, data
    assert message in data["error"], data


@pytest.mark.parametrize(
    ("route", "runner_cls"), [("/predict", RandomForestRunner), ("/predict_edge", TFLiteRunner)]
)
def test_missing_values_are_predicted_as_the_model_itself_predicts_them(
    server, trained, route, runner_cls
):
    # null, NaN and a missing value in every field: the forest routes each per split, the
    # TFLite model gets the training rows' fill values (bentos.schema.dense).
    rows = [{**ROW, "petal_length": None}, dict.fromkeys(ROW)]
    body = json.dumps({"instances": [*rows, {**ROW, "sepal_length": math.nan}]}, allow_nan=True)
    resp = httpx.post(
        server.url + route, content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200, resp.text
    x = np.array([[np.nan if v is None else v for v in r.values()] for r in rows])
    x = np.vstack([x, [[np.nan, 3.5, 1.4, 0.2]]])
    tag = trained.rf_tag if runner_cls is RandomForestRunner else trained.tflite_tag
    want = runner_cls(tag).predict_proba(x)
    np.testing.assert_allclose(resp.json()["probabilities"], want, atol=1e-6)


def test_bad_input_lists_every_problem_with_row_and_field(server):
    rows = [ROW, {**ROW, "sepal_width": "x"}, {**ROW, "petal_width": math.inf}]
    status, data = _bad(server, json.dumps({"instances": rows}, allow_nan=True))
    assert status == 400
    assert {(e["row"], e["field"]) for e in data["errors"]} == {
        (1, "sepal_width"),
        (2, "petal_width"),
    }


def test_body_over_the_byte_limit_is_a_413(server):
    status, data = _bad(server, b"{" + b" " * 20001 + b"}")
    assert status == 413
    assert "limit is 20000" in data["error"]


def test_body_over_the_byte_limit_without_content_length_is_a_413(server):
    def chunks():
        for _ in range(30):
            yield b" " * 1000

    status, data = _bad(server, chunks())
    assert status == 413
    assert "exceeds the limit of 20000 bytes" in data["error"]


def test_unknown_routes_and_methods_get_json_errors_too(server):
    for method, path, status in [
        ("GET", "/predict", 405),
        ("POST", "/v2/models/a/b/infer", 404),
        ("GET", "/v2/nothing", 404),
    ]:
        resp = httpx.request(method, server.url + path)
        assert resp.status_code == status, (path, resp.text)
        assert resp.headers["content-type"].startswith("application/json")
        assert path in resp.json()["error"]


def test_a_path_no_route_matches_is_a_json_404(server):
    resp = httpx.post(server.url + "/v2/models/%0A/infer", json={})
    assert resp.status_code == 404
    assert "unknown model '\\n'" in resp.json()["error"]
    resp = httpx.post(server.url + "/no/such/route", json={})
    assert resp.status_code == 404
    assert "no such route" in resp.json()["error"]
    assert httpx.get(server.url + "/livez").status_code == 200  # the rest passes through


def test_a_keepalive_connection_is_closed_after_a_few_responses(server):
    """BENTOS_KEEPALIVE_REQUESTS=5 here: within 5 responses on one connection the worker says
    `Connection: close` and closes it, so the client reconnects (and may reach another worker)."""
    import socket

    request = (
        f"GET /models HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()  # keep-alive
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for _ in range(5):
            sock.sendall(request)
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            reader.read(int(headers["content-length"]))
            assert status.startswith(b"HTTP/1.1 200"), status
            if headers.get("connection") == "close":
                break
        else:
            pytest.fail("5 responses on one connection and none closed it")
        assert reader.read() == b"", "the server kept the connection open after saying close"
    # Clients that reconnect on their own see nothing but answers.
    with httpx.Client(base_url=server.url) as client:
        assert {client.get("/models").status_code for _ in range(12)} == {200}
