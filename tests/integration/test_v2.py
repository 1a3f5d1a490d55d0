"""The Open Inference Protocol (V2) over REST (port of the service) and gRPC (bentos.serving.grpc),
called with the real tritonclient, as existing Triton and KServe clients would."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from bentos.training.data import load_builtin

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABELS = ["setosa", "versicolor", "virginica"]
ROUTES = {"rf": "/predict", "tflite": "/predict_edge"}


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """50 rows (the test server's row limit), from all three classes."""
    return load_builtin("iris").features.iloc[::3].to_numpy(dtype=np.float32)[:50]


@pytest.fixture(scope="module")
def http_client(server):
    return thttp.InferenceServerClient(server.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def grpc_client(grpc_server):
    return tgrpc.InferenceServerClient(grpc_server.address)


@pytest.fixture(params=["http", "grpc"])
def transport(request, http_client, grpc_client):
    return (thttp, http_client) if request.param == "http" else (tgrpc, grpc_client)


def _infer(
    module,
    client,
    model,
    x,
    *,
    binary=True,
    outputs=("label", "probabilities"),
    name="features",
    datatype="FP32",
):
    inp = module.InferInput(name, list(x.shape), datatype)
    if module is thttp:
        inp.set_data_from_numpy(x, binary_data=binary)
        wanted = [module.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    else:
        inp.set_data_from_numpy(x)
        wanted = [module.InferRequestedOutput(o) for o in outputs]
    return client.infer(model, [inp], outputs=wanted)


def test_health_and_server_metadata(transport):
    module, client = transport
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("rf") and client.is_model_ready("tflite")
    meta = client.get_server_metadata(**({"as_json": True} if module is tgrpc else {}))
    assert meta["name"] == "bentos" and "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("model", ["rf", "tflite"])
def test_model_metadata_lists_tensors_version_labels_and_features(
    server, trained, http_client, grpc_client, model
):
    tag = trained.rf_tag if model == "rf" else trained.tflite_tag
    meta = http_client.get_model_metadata(model)
    assert meta["versions"] == [tag.split(":")[1]]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert json.loads(meta["parameters"]["class_labels"]) == LABELS
    assert json.loads(meta["parameters"]["feature_names"]) == FEATURES

    gmeta = grpc_client.get_model_metadata(model, as_json=True)
    assert gmeta["versions"] == meta["versions"]
    assert gmeta["inputs"][0]["shape"] == ["-1", "4"]
    config = grpc_client.get_model_config(model, as_json=True)["config"]
    assert json.loads(config["parameters"]["class_labels"]["string_value"]) == LABELS
    assert json.loads(config["parameters"]["feature_names"]["string_value"]) == FEATURES


@pytest.mark.parametrize("model", ["rf", "tflite"])
@pytest.mark.parametrize("binary", [True, False])
def test_infer_equals_the_json_api_for_many_rows(server, transport, rows, model, binary):
    module, client = transport
    result = _infer(module, client, model, rows, binary=binary)
    labels, proba = result.as_numpy("label"), result.as_numpy("probabilities")
    assert labels.dtype == np.int64 and labels.shape == (50,)
    assert proba.dtype == np.float32 and proba.shape == (50, 3)
    instances = [dict(zip(FEATURES, map(float, r), strict=True)) for r in rows]
    online = httpx.post(server.url + ROUTES[model], json={"instances": instances}).json()
    assert [LABELS[i] for i in labels] == online["predictions"]
    np.testing.assert_allclose(proba, online["probabilities"], atol=1e-5)


def test_one_requested_output_only(transport, rows):
    module, client = transport
    result = _infer(module, client, "rf", rows[:3], outputs=("probabilities",))
    assert result.as_numpy("label") is None and result.as_numpy("probabilities").shape == (3, 3)


def _status(exc: InferenceServerException) -> str:
    return str(exc.status())


ERRORS = {
    # case: (kwargs for _infer, REST status, gRPC code, message)
    "wrong shape": ({"x": "narrow"}, "400", "StatusCode.INVALID_ARGUMENT", "[N, 4] is required"),
    "wrong dtype": ({"datatype": "FP64"}, "400", "StatusCode.INVALID_ARGUMENT", "FP32 is required"),
    "wrong tensor name": (
        {"name": "inputs"},
        "400",
        "StatusCode.INVALID_ARGUMENT",
        "unknown input tensor 'inputs'",
    ),
    "unknown model": (
        {"model": "xgboost"},
        "404",
        "StatusCode.NOT_FOUND",
        "unknown model 'xgboost'",
    ),
    "unknown output": (
        {"outputs": ("logits",)},
        "400",
        "StatusCode.INVALID_ARGUMENT",
        "unknown output 'logits'",
    ),
    # NaN is a missing value (test_a_nan_is_a_missing_value_in_both_protocols); infinity is not.
    "infinity": (
        {"x": "inf"},
        "400",
        "StatusCode.INVALID_ARGUMENT",
        "row 1, feature 'petal_length'",
    ),
    "too many rows": (
        {"x": "tall"},
        "400",
        "StatusCode.INVALID_ARGUMENT",
        "at most 50 are allowed",
    ),
}


def test_a_nan_is_a_missing_value_in_both_protocols(http_client, grpc_client, rows, trained):
    from bentos.runners import RandomForestRunner

    x = np.where(np.arange(8).reshape(2, 4) == 6, np.nan, rows[:2]).astype(np.float32)
    want = RandomForestRunner(trained.rf_tag).predict_proba(x.astype(np.float64))
    for module, client in ((thttp, http_client), (tgrpc, grpc_client)):
        result = _infer(module, client, "rf", x)
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_requests_are_client_errors_with_a_message(http_client, grpc_client, rows, case):
    kwargs, rest_status, grpc_code, message = ERRORS[case]
    kwargs = dict(kwargs)
    model = kwargs.pop("model", "rf")
    x = {
        "narrow": rows[:2, :3].copy(),
        "inf": np.where(np.arange(8).reshape(2, 4) == 6, np.inf, rows[:2]).astype(np.float32),
        "tall": np.repeat(rows[:1], 51, axis=0),
    }.get(kwargs.pop("x", None), rows[:2])
    if kwargs.get("datatype") == "FP64":
        x = x.astype(np.float64)
    for module, client, expected in (
        (thttp, http_client, rest_status),
        (tgrpc, grpc_client, grpc_code),
    ):
        with pytest.raises(InferenceServerException) as info:
            _infer(module, client, model, x, **kwargs)
        assert _status(info.value) == expected, (module.__name__, info.value)
        assert message in info.value.message(), (module.__name__, info.value)


def test_rest_errors_are_json_with_an_error_field(server):
    cases = [
        ("/v2/models/rf/infer", b"{not json", 400, "malformed JSON"),
        (
            "/v2/models/rf/infer",
            b'{"inputs": []}',
            400,
            "the request has 0 inputs; the model takes one",
        ),
        (
            "/v2/models/rf/infer",
            b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], '
            b'"data": [1, 2, "x", 4]}]}',
            400,
            'every value must be a number, got "x"',
        ),
        ("/v2/models/rf/versions/nope/infer", b"{}", 404, "has no version 'nope'"),
    ]
    for path, body, status, message in cases:
        resp = httpx.post(server.url + path, content=body)
        assert resp.status_code == status, (path, resp.text)
        assert message in resp.json()["error"]
    resp = httpx.post(
        server.url + "/v2/models/rf/infer",
        content=b'{"inputs": []}XXXX',
        headers={"Inference-Header-Content-Length": "999"},
    )
    assert resp.status_code == 400 and "outside the body" in resp.json()["error"]
    assert httpx.get(server.url + "/v2/models/nope").status_code == 404
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}


def test_grpc_health_service_answers_serving(grpc_server):
    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_reflection_lists_the_services_for_grpcurl_style_tools(grpc_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
