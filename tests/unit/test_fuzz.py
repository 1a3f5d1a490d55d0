"""A structure-aware fuzzer over every decode path, in process: generated JSON (hypothesis's
recursive strategies, shaped like the real bodies and not), raw bytes, V2 REST bodies with
binary parts and gRPC requests. Each must end in an answer or a ClientError (a 4xx), never
anything else; through the HTTP app, never a 5xx, and every error body JSON. The JSON API's fast
path for the common body is held to its careful path: the same matrix bit for bit, or the same
status, message and problems.

The suite runs a bounded sample (hypothesis's `ci` profile, tests/conftest.py); the long run,
`long`, 25,000 inputs for each test (docs/reliability.md):

    .venv/bin/python -m pytest tests/unit/test_fuzz.py -p no:cacheprovider --hypothesis-profile=long
"""

from __future__ import annotations

import asyncio
import json
import math

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
    # NaN is a missing value (a null), which a model with column kinds takes; infinity never.
    assert x.ndim == 2 and x.shape[1] == 4 and not np.isinf(x).any()


@given(body=v2_bodies | json_values | nested, tail=st.binary(max_size=40), header=st.booleans())
def test_any_v2_rest_body_gives_a_matrix_or_a_client_error(body, tail, header):
    head = body if isinstance(body, bytes) else _encoded(body)
    try:
        request = v2.rest_request(head + tail, str(len(head)) if header else None)
        x = v2.features(SCHEMA, request, max_rows=5)
    except ClientError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert x.shape[1] == 4 and not np.isinf(x).any()  # NaN: a missing value


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
    assert x.shape[1] == 4 and not np.isinf(x).any()  # NaN: a missing value


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


# -- the fast path against the careful one ---------------------------------------------------------


class _Careful(FeatureSchema):
    """The same schema with the fast path declining every body: what the careful path alone
    answers, to hold the fast one to."""

    def _fast_matrix(self, instances):
        return None


CAREFUL = _Careful(SCHEMA.features, SCHEMA.labels, SCHEMA.target, SCHEMA.columns)
# JSON numbers as orjson reads them (64-bit integers, finite doubles) and as the standard library
# reads what orjson refuses (larger integers, NaN, Infinity, 1e999).
in_range = st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
valid_rows = st.fixed_dictionaries({n: in_range for n in FEATURES})
# One thing off in an otherwise valid body: a value of another kind, a feature missing or added.
_ODD = [None, True, False, "3.5", "", [], [1.0], {}, {"a": 1}, 2**70, 2**1100, -(2**1100)]
odd_values = st.sampled_from(
    [*_ODD, 2**64, math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 2**53 + 1, -(2**63) - 1]
)


@st.composite
def near_valid(draw) -> list:
    instances = draw(st.lists(valid_rows, min_size=1, max_size=70))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(instances) - 1))
        row = instances[i]
        change = draw(st.sampled_from(["value", "drop", "add", "replace"]))
        name = draw(st.sampled_from(FEATURES))
        if not isinstance(row, dict) or change == "replace":
            instances[i] = draw(json_values)
        elif change == "value":
            row[name] = draw(odd_values)
        elif change == "drop":
            row.pop(name, None)
        else:
            row[draw(st.sampled_from(["x", "Sepal_length", ""]))] = draw(in_range)
    return instances


def _answer(schema: FeatureSchema, raw: bytes):
    try:
        return schema.validate_body(parse_json(raw), max_rows=64)
    except ClientError as exc:
        return exc.status, exc.message, exc.problems


@given(valid=st.lists(valid_rows, min_size=1, max_size=64))
def test_the_fast_path_takes_valid_rows_and_gives_the_careful_paths_matrix_bit_for_bit(valid):
    fast = SCHEMA._fast_matrix(valid)
    assert fast is not None, "a valid body went the careful way"
    careful = CAREFUL.validate_instances(valid, max_rows=64)
    assert fast.dtype == careful.dtype == np.float64 and fast.shape == careful.shape
    assert fast.tobytes() == careful.tobytes()


@given(instances=near_valid())
def test_any_instances_get_the_careful_paths_matrix_or_its_very_error(instances):
    # The standard library writes NaN, Infinity and integers past 64 bits, as a client may.
    raw = json.dumps({"instances": instances}, allow_nan=True).encode()
    fast, careful = _answer(SCHEMA, raw), _answer(CAREFUL, raw)
    if isinstance(careful, np.ndarray):
        assert isinstance(fast, np.ndarray) and fast.tobytes() == careful.tobytes()
        assert fast.shape == careful.shape
    else:
        assert fast == careful  # status, message and every (row, field, problem)


@given(body=bodies | nested | st.binary(max_size=64))
def test_any_body_gets_the_careful_paths_answer(body):
    raw = body if isinstance(body, bytes) else _encoded(body)
    fast, careful = _answer(SCHEMA, raw), _answer(CAREFUL, raw)
    if isinstance(careful, np.ndarray):
        assert isinstance(fast, np.ndarray) and fast.tobytes() == careful.tobytes()
    else:
        assert fast == careful
