"""The HTTP app (bentos.serving.app) in process, through httpx's ASGI transport: no server, the
session's real models, every route's answer and refusal."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from bentos.runners import RandomForestRunner, TFLiteRunner
from bentos.serving.app import create_app
from bentos.serving.core import Core
from bentos.settings import ServingSettings
from tests.support.strategies import FEATURES, ROW


@pytest.fixture(scope="module")
def app(trained):
    settings = ServingSettings(max_rows=10, max_body_bytes=4000)
    core = Core(
        {
            "rf": ("/predict", RandomForestRunner(trained.rf_tag, "packed")),
            "tflite": ("/predict_edge", TFLiteRunner(trained.tflite_tag)),
        },
        settings,
    )
    return create_app(core)


def call(app, method: str, path: str, **kw) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


@pytest.mark.parametrize(("route", "model"), [("/predict", "rf"), ("/predict_edge", "tflite")])
def test_predict_answers_what_the_model_computes(app, route, model):
    rows = [ROW, {**ROW, "petal_length": 5.0, "petal_width": 2.0}]
    resp = call(app, "POST", route, json={"instances": rows})
    assert resp.status_code == 200, resp.text
    runner = app.state.core.model(model).runner
    want = runner.predict_proba(np.array([[r[f] for f in FEATURES] for r in rows]))
    body = resp.json()
    assert body["model"] == runner.tag
    assert body["predictions"] == runner.labels_for(want)
    np.testing.assert_array_equal(np.asarray(body["probabilities"], np.float32), want)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"instances": [{**ROW, "sepal_width": "3.5"}]}, "instances[0].sepal_width"),
        ({"instances": [ROW] * 11}, "at most 10 are allowed"),
        ({"rows": [ROW]}, '{"instances": [{feature: value, ...}, ...]}'),
        ([ROW], '{"instances": [{feature: value, ...}, ...]}'),
    ],
)
def test_bad_bodies_are_400s_that_say_what_is_wrong(app, body, says):
    resp = call(app, "POST", "/predict", json=body)
    assert resp.status_code == 400
    assert says in resp.json()["error"]


def test_malformed_json_is_a_400(app):
    resp = call(
        app,
        "POST",
        "/predict",
        content=b'{"instances": [',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400 and "malformed JSON" in resp.json()["error"]


def test_a_body_over_the_limit_is_a_413_even_without_a_declared_length(app):
    body = json.dumps({"instances": [ROW] * 100}).encode()
    assert call(app, "POST", "/predict", content=body).status_code == 413

    async def chunks():
        yield body

    assert call(app, "POST", "/predict", content=chunks()).status_code == 413


def test_models_lists_both_models_with_their_schema(app, trained):
    models = {m["name"]: m for m in call(app, "GET", "/models").json()["models"]}
    assert models["rf"]["tag"] == trained.rf_tag and models["rf"]["backend"] == "packed"
    assert models["tflite"]["tag"] == trained.tflite_tag
    assert [f["name"] for f in models["rf"]["schema"]["features"]] == FEATURES


def test_v2_metadata_and_infer(app, trained):
    version = trained.rf_tag.split(":")[1]
    meta = call(app, "GET", f"/v2/models/rf/versions/{version}").json()
    assert meta["versions"] == [version] and meta["inputs"][0]["shape"] == [-1, 4]
    request = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    out = call(app, "POST", "/v2/models/rf/infer", json=request).json()
    assert {o["name"] for o in out["outputs"]} == {"label", "probabilities"}
    assert call(app, "GET", "/v2/models/nope").status_code == 404
    assert call(app, "GET", "/v2/models/rf/versions/0").status_code == 404


def test_openapi_document_describes_both_prediction_routes(app):
    paths = call(app, "GET", "/openapi.json").json()["paths"]
    assert {"/predict", "/predict_edge"} <= set(paths)


def test_openapi_document_describes_the_report_routes(app):
    paths = call(app, "GET", "/openapi.json").json()["paths"]
    page, file = paths["/models/{name}/report"]["get"], paths["/models/{name}/report/{file}"]["get"]
    assert page["parameters"][0]["schema"]["enum"] == ["rf", "tflite"]
    assert set(page["responses"]["200"]["content"]) == {"text/html"}
    assert "image/png" in file["responses"]["200"]["content"]
    assert [p["name"] for p in file["parameters"]] == ["name", "file"]
    assert "404" in page["responses"] and "404" in file["responses"]


def test_an_unexpected_failure_is_a_json_500_that_leaks_nothing(app, monkeypatch):
    model = app.state.core.model("rf")

    def broken(x):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(model.batcher, "_fn", broken)
    resp = call(app, "POST", "/predict", json={"instances": [ROW]})
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("application/json")
    assert "secret" not in resp.text and resp.json()["error"]


def test_a_request_id_comes_back_as_it_was_sent_whatever_its_bytes(app):
    rid = b"caf\xe9-42"  # a header's bytes are latin-1, not UTF-8
    resp = call(app, "POST", "/predict", json={"instances": [ROW]}, headers={"x-request-id": rid})
    assert resp.status_code == 200
    assert (
        resp.headers.raw[[k.lower() for k, _ in resp.headers.raw].index(b"x-request-id")][1] == rid
    )


def test_a_v2_header_length_that_is_not_ascii_digits_is_a_400(app):
    length = "\u00b2".encode("latin-1")  # "²": a digit to str.isdigit(), not to int()
    resp = call(
        app,
        "POST",
        "/v2/models/rf/infer",
        content=b"{}",
        headers={"inference-header-content-length": length},
    )
    assert resp.status_code == 400, resp.text
    assert "Inference-Header-Content-Length" in resp.json()["error"]
