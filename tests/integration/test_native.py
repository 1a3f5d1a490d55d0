"""The service as BentoML's own tools see it: `bentoml.SyncHTTPClient` and `AsyncHTTPClient`
call its typed methods and get curl's answers, another service calls it through
`bentoml.depends`, and the Swagger UI at / documents every route with schemas and examples."""

from __future__ import annotations

import asyncio

import bentoml
import httpx
import pytest

from benchmarks.servers import bentoml_serve
from tests.support import SERVER_ENV
from tests.support.strategies import ROW

ROWS = [ROW, {**ROW, "petal_length": 5.2, "petal_width": 2.3, "sepal_length": 6.7}]


@pytest.mark.parametrize(
    ("method", "route"), [("predict", "/predict"), ("predict_edge", "/predict_edge")]
)
def test_sync_client_gets_what_curl_gets(server, method, route):
    with bentoml.SyncHTTPClient(server.url) as client:
        answer = getattr(client, method)(instances=ROWS)
    assert answer == httpx.post(server.url + route, json={"instances": ROWS}).json()


def test_async_client_gets_what_curl_gets(server):
    async def call():
        async with bentoml.AsyncHTTPClient(server.url) as client:
            return await client.predict(instances=ROWS)

    assert (
        asyncio.run(call()) == httpx.post(server.url + "/predict", json={"instances": ROWS}).json()
    )


def test_client_errors_carry_the_row_and_field(server):
    with (
        bentoml.SyncHTTPClient(server.url) as client,
        pytest.raises(bentoml.exceptions.BentoMLException) as raised,
    ):
        client.predict(instances=[{**ROW, "sepal_width": "3.5"}])
    assert "instances[0].sepal_width" in str(raised.value)


def test_schema_lists_both_typed_methods(server):
    routes = {r["name"]: r for r in httpx.get(server.url + "/schema.json").json()["routes"]}
    assert {"predict", "predict_edge"} <= set(routes)
    row = routes["predict"]["input"]["properties"]["instances"]["items"]
    assert sorted(row["properties"]) == sorted(ROW)


def test_another_service_calls_it_through_bentoml_depends(pinned):
    caller = bentoml_serve("tests.support.caller_service:Caller", {**SERVER_ENV, **pinned})
    try:
        caller.wait_ready(timeout=180)
        relayed = httpx.post(caller.url + "/relay", json={"instances": ROWS}, timeout=30)
        assert relayed.status_code == 200, relayed.text
        answer = relayed.json()
        assert answer["model"] == pinned["BENTOS_RF_MODEL"]
        assert answer["predictions"] == ["setosa", "virginica"]
    finally:
        caller.stop()


def test_swagger_ui_documents_every_route_with_schemas_and_a_working_example(server):
    assert "swagger" in httpx.get(server.url + "/").text.lower()
    doc = httpx.get(server.url + "/docs.json").json()
    paths = doc["paths"]
    for path in (
        "/predict",
        "/predict_edge",
        "/models",
        "/openapi.json",
        "/v2",
        "/v2/models/{model}/infer",
    ):
        assert path in paths, path
    predict = paths["/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["instances"]["items"]["required"] == list(ROW)
    assert "200" in predict["responses"] and "400" in predict["responses"]
    assert httpx.post(server.url + "/predict", json=body["example"]).status_code == 200
    v2_example = paths["/v2/models/{model}/infer"]["post"]["requestBody"]["content"][
        "application/json"
    ]["example"]
    assert httpx.post(server.url + "/v2/models/rf/infer", json=v2_example).status_code == 200
    assert httpx.get(server.url + "/openapi.json").json() == doc
