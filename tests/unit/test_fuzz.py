"""A structure-aware fuzzer over every decode path, in process: generated JSON (hypothesis's
recursive strategies, shaped like the real bodies and not), raw bytes, V2 REST bodies with
binary parts and gRPC requests. Each must end in an answer or a ClientError (a 4xx), never
anything else; through the HTTP app, never a 5xx, and every error body JSON.

The suite runs a bounded sample (hypothesis's `ci` profile, tests/conftest.py); the long run,
`long`, 25,000 inputs for each of the four tests (docs/reliability.md):

    .venv/bin/python -m pytest tests/unit/test_fuzz.py -p no:cacheprovider --hypothesis-profile=long
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from bentos.errors import ClientError
from bentos.runners import RandomForestRunner, TFLiteRunner
from bentos.schema import FeatureSchema, parse_json
from bentos.serving import v2
from bentos.serving.app import create_app
from bentos.serving.core import Core
from bentos.settings import ServingSettings
from bentos.training.data import load_builtin
from tests.support.strategies import FEATURES, json_values

SCHEMA = FeatureSchema.from_training(load_builtin("iris").features, ["a", "b", "c"], "species")
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
deep = st.recursive(st.just(0), lambda inner: st.lists(inner, max_size=2), max_leaves=1500)
# Nesting past any parser's depth limit, alone or where a field's value goes, with or without the
# literals (NaN, Infinity) that send a body to the standard library's parser.
nested = st.builds(
    lambda n, key, literal: (f'{{"{key}": {literal}, "x": ' + "[" * n + "]" * n + "}").encode(),
    st.integers(1, 5000),
    st.sampled_from(["instances", "inputs"]),
    st.sampled_from(["0", "NaN", "Infinity", "1e999"]),
)
rows = st.dictionaries(st.sampled_from([*FEATURES, "x"]), numbers | json_values, max_size=6)
bodies = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(rows, max_size=4)}),
    st.dictionaries(st.sampled_from(["instances", "inputs", "x"]), json_values | deep, max_size=3),
    json_values,
    deep,
)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["features", "x"]) | st.text(max_size=3),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "FP16", "BOOL", "FP33"]),
        "shape": st.lists(st.integers(-2, 6), max_size=3) | json_values,
    },
    optional={
        "data": st.lists(numbers | json_values, max_size=30) | json_values,
        "parameters": st.fixed_dictionaries(
            {"binary_data_size": st.integers(-4, 80) | json_values}
        ),
    },
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=2) | json_values},
    optional={"outputs": json_values | st.lists(st.fixed_dictionaries({"name": json_values}))},
)


def _encoded(body) -> bytes:
    try:
        return orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):  # a number orjson will not write (2**70)
        return repr(body).encode()


@given(body=bodies | nested | st.binary(max_size=64))
def test_any_json_api_body_gives_a_matrix_or_a_client_error(body):
    raw = body if isinstance(body, bytes) else _encoded(body)
    try:
        x = SCHEMA.validate_body(parse_json(raw), max_rows=5)
    except ClientError as exc:
        assert 400 <= exc.status < 500 and exc.to_dict()["error"]
        return
    assert x.ndim == 2 and x.shape[1] == 4 and np.isfinite(x).all()


@given(body=v2_bodies | json_values | nested, tail=st.binary(max_size=40), header=st.booleans())
def test_any_v2_rest_body_gives_a_matrix_or_a_client_error(body, tail, header):
    head = body if isinstance(body, bytes) else _encoded(body)
    try:
        request = v2.rest_request(head + tail, str(len(head)) if header else None)
        x = v2.features(SCHEMA, request, max_rows=5)
    except ClientError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert x.shape[1] == 4 and np.isfinite(x).all()


@given(
    inputs=st.lists(
        st.tuples(
            st.sampled_from(["features", "x", ""]),
            st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BYTES", "FP16", "BOOL", "X"]),
            st.lists(st.integers(0, 6), max_size=3),
            st.lists(st.floats(allow_nan=True, width=32), max_size=30),
        ),
        max_size=2,
    ),
    raw=st.none() | st.lists(st.binary(max_size=40), max_size=3),
)
def test_any_grpc_request_gives_a_matrix_or_a_client_error(inputs, raw):
    request = pb.ModelInferRequest(model_name="rf")
    for name, datatype, shape, values in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is None and values:
            tensor.contents.fp32_contents.extend(values)
    if raw is not None:
        request.raw_input_contents.extend(raw)
    try:
        x = v2.features(SCHEMA, v2.grpc_request(request), max_rows=5)
    except ClientError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert x.shape[1] == 4 and np.isfinite(x).all()


@pytest.fixture(scope="module")
def app(trained):
    core = Core(
        {
            "rf": ("/predict", RandomForestRunner(trained.rf_tag, "packed")),
            "tflite": ("/predict_edge", TFLiteRunner(trained.tflite_tag)),
        },
        ServingSettings(max_rows=5, max_body_bytes=20_000),
    )
    return create_app(core)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(
        ["/predict", "/predict_edge", "/v2/models/rf/infer", "/v2/models/tflite/versions/x/infer"]
    ),
    body=bodies | v2_bodies | nested | st.binary(max_size=64),
    header=st.none() | st.text(max_size=4),
)
def test_any_body_through_the_http_app_is_answered_without_a_5xx(app, route, body, header):
    content = body if isinstance(body, bytes) else _encoded(body)
    headers = {"content-type": "application/json"}
    if header is not None and header.isascii() and header.isprintable():
        headers["inference-header-content-length"] = header

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.post(route, content=content, headers=headers)

    resp = asyncio.run(call())
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json()["error"]
