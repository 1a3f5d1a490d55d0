"""The Open Inference Protocol codec (bentos.serving.v2), in process: REST bodies with and
without binary tensors, the input checks and what their errors say, and the encoded outputs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from bentos.schema import FeatureSchema
from bentos.serving import v2
from bentos.training.data import load_builtin

SCHEMA = FeatureSchema.from_training(load_builtin("iris").features, ["a", "b", "c"], "species")
RUNNER = SimpleNamespace(schema=SCHEMA, tag="rf-classifier:abc")
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def _tensor(**changes):
    return {"name": "features", "datatype": "FP32", "shape": [2, 4], **changes}


def test_json_data_and_binary_data_decode_to_the_same_matrix():
    request, binary = v2.decode_rest(orjson.dumps({"inputs": [_tensor(data=ROWS.tolist())]}), None)
    as_json = v2.rest_input(request, binary)
    raw = ROWS.astype("<f4").tobytes()
    head = orjson.dumps({"inputs": [_tensor(parameters={"binary_data_size": len(raw)})]})
    request, binary = v2.decode_rest(head + raw, str(len(head)))
    as_binary = v2.rest_input(request, binary)
    for name, datatype, shape, data in (as_json, as_binary):
        x = v2.check_features(RUNNER, name, datatype, shape, data, max_rows=10)
        np.testing.assert_array_equal(x, ROWS.astype(np.float64))


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        (_tensor(name="x", data=[0] * 8), "unknown input tensor 'x'"),
        (_tensor(datatype="INT64", data=[0] * 8), "datatype INT64; FP32 is required"),
        (_tensor(shape=[2, 3], data=[0] * 6), "[N, 4] is required"),
        (_tensor(shape=[20, 4], data=[0] * 80), "at most 10 are allowed"),
        (_tensor(data=[0] * 7), "has 7 values; shape [2, 4] needs 8"),
        (_tensor(data=[0, 0, 0, "x"] * 2), 'every value must be a number, got "x"'),
    ],
)
def test_a_tensor_that_does_not_fit_is_a_400_saying_what_is_wrong(tensor, says):
    request, binary = v2.decode_rest(orjson.dumps({"inputs": [tensor]}), None)
    with pytest.raises(v2.V2Error) as raised:
        v2.check_features(RUNNER, *v2.rest_input(request, binary), max_rows=10)
    assert raised.value.status == 400 and says in raised.value.message


def test_a_header_length_outside_the_body_is_a_400():
    with pytest.raises(v2.V2Error, match="outside the body"):
        v2.decode_rest(b"{}", "10")


def test_outputs_encode_as_json_or_little_endian_binary():
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    outs = v2.build_outputs(proba, [("label", False), ("probabilities", True)])
    content, headers = v2.encode_rest("rf", "abc", "req-1", outs)
    head_len = int(headers["Inference-Header-Content-Length"])
    head = json.loads(content[:head_len])
    assert head["id"] == "req-1" and head["model_version"] == "abc"
    label, probabilities = head["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert probabilities["parameters"]["binary_data_size"] == proba.nbytes
    np.testing.assert_array_equal(
        np.frombuffer(content[head_len:], dtype="<f4").reshape(2, 3), proba
    )
