"""The Open Inference Protocol codec (bentos.serving.v2), in process: REST bodies with and
without binary tensors, gRPC requests with raw and typed contents, what each refusal says, and
the encoded outputs."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb

from bentos.errors import InputError
from bentos.schema import FeatureSchema
from bentos.serving import v2
from bentos.training.data import load_builtin

SCHEMA = FeatureSchema.from_training(load_builtin("iris").features, ["a", "b", "c"], "species")
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def _tensor(**changes):
    return {"name": "features", "datatype": "FP32", "shape": [2, 4], **changes}


def _rest(*tensors, binary: bytes = b"") -> v2.Request:
    head = orjson.dumps({"inputs": list(tensors)})
    return v2.rest_request(head + binary, str(len(head)) if binary else None)


def _grpc(raw: list[bytes] | None = None, shape=(2, 4), datatype="FP32", inputs=1):
    request = pb.ModelInferRequest(model_name="rf")
    for _ in range(inputs):
        request.inputs.add(name="features", datatype=datatype, shape=list(shape))
    if raw is None:
        request.inputs[0].contents.fp32_contents.extend(ROWS.ravel().tolist())
    else:
        request.raw_input_contents.extend(raw)
    return request


def _matrix(request: v2.Request) -> np.ndarray:
    return v2.features(SCHEMA, request, max_rows=10)


def test_every_encoding_decodes_to_the_same_matrix():
    raw = ROWS.astype("<f4").tobytes()
    decoded = [
        _rest(_tensor(data=ROWS.tolist())),
        _rest(_tensor(data=ROWS.ravel().tolist())),
        _rest(_tensor(parameters={"binary_data_size": len(raw)}), binary=raw),
        v2.grpc_request(_grpc()),
        v2.grpc_request(_grpc([raw])),
    ]
    for request in decoded:
        np.testing.assert_array_equal(_matrix(request), ROWS.astype(np.float64))


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        (_tensor(name="x", data=[0] * 8), "unknown input tensor 'x'"),
        (_tensor(datatype="INT64", data=[0] * 8), "datatype INT64; FP32 is required"),
        (_tensor(datatype="FP33", data=[0] * 8), "unknown datatype 'FP33'"),
        (_tensor(shape=[2, 3], data=[0] * 6), "[N, 4] is required"),
        (_tensor(shape=[2, -4], data=[0] * 8), "'shape' must be a list of non-negative integers"),
        (_tensor(shape=[20, 4], data=[0] * 80), "at most 10 are allowed"),
        (_tensor(data=[0] * 7), "has 7 values; shape [2, 4] needs 8"),
        (_tensor(data=[0, 0, 0, "x"] * 2), 'every value must be a number, got "x"'),
        (_tensor(data=[0, 0, 0, None] * 2), "every value must be a number, got null"),
        (_tensor(data=[0, 0, 0, True] * 2), "every value must be a number, got true"),
        (_tensor(data=[0, 0, 0, 1e400] * 2), "feature"),  # inf: the schema names the feature
    ],
)
def test_a_rest_tensor_that_does_not_fit_is_a_400_saying_what_is_wrong(tensor, says):
    with pytest.raises(InputError) as raised:
        _matrix(_rest(tensor))
    assert raised.value.status == 400 and says in raised.value.message


def test_binary_data_that_is_not_the_shape_s_worth_is_refused_saying_so():
    with pytest.raises(
        InputError, match=r"3 bytes of raw data, but shape \[1, 4\] of FP32 needs 16"
    ):
        _rest(_tensor(shape=[1, 4], parameters={"binary_data_size": 3}), binary=b"abc")
    with pytest.raises(InputError, match="belong to no input"):
        raw = ROWS.astype("<f4").tobytes()
        _rest(_tensor(parameters={"binary_data_size": len(raw)}), binary=raw + b"x")
    with pytest.raises(InputError, match="outside the body"):
        v2.rest_request(b"{}", "10")


def test_grpc_raw_contents_of_the_wrong_size_are_refused_saying_so():
    # A 3-byte raw input for a [1, 4] FP32 tensor: a size problem, not a datatype problem.
    with pytest.raises(
        InputError, match=r"3 bytes of raw data, but shape \[1, 4\] of FP32 needs 16"
    ):
        v2.grpc_request(_grpc([b"abc"], shape=(1, 4)))


def test_grpc_raw_contents_must_be_one_entry_per_input():
    raw = ROWS.astype("<f4").tobytes()
    with pytest.raises(InputError, match="2 raw input contents for 1 inputs"):
        v2.grpc_request(_grpc([raw, raw]))
    with pytest.raises(InputError, match="the request has 2 inputs; the model takes one"):
        _matrix(v2.grpc_request(_grpc([raw, raw], inputs=2)))


def test_outputs_encode_as_json_or_little_endian_binary():
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    classifier = FeatureSchema.from_training(load_builtin("iris").features, list("abc"), "species")
    outs = v2.outputs(proba, [("label", False), ("probabilities", True)], classifier)
    content, headers = v2.rest_response("rf", "abc", "req-1", outs)
    head_len = int(headers["Inference-Header-Content-Length"])
    head = json.loads(content[:head_len])
    assert head["id"] == "req-1" and head["model_version"] == "abc"
    label, probabilities = head["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert probabilities["parameters"]["binary_data_size"] == proba.nbytes
    np.testing.assert_array_equal(
        np.frombuffer(content[head_len:], dtype="<f4").reshape(2, 3), proba
    )
    response = v2.grpc_response("rf", "abc", "req-1", outs)
    assert [o.name for o in response.outputs] == ["label", "probabilities"]
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[1], dtype="<f4").reshape(2, 3), proba
    )


def test_unknown_outputs_are_refused_naming_what_the_model_gives():
    request = {"inputs": [_tensor(data=[0] * 8)], "outputs": [{"name": "logits"}]}
    with pytest.raises(InputError, match="unknown output 'logits'; a model gives label"):
        v2.rest_request(orjson.dumps(request), None)


def test_a_regression_answers_its_number_and_refuses_a_classifier_s_outputs():
    iris = load_builtin("iris").features
    regression = FeatureSchema.from_training(iris, [], "petal_width", task="regression")
    answers = np.array([[1.5, 0.25], [0.5, 0.0]], dtype=np.float32)
    everything = v2.outputs(answers, [("*", False)], regression)
    assert [(o.name, o.datatype, o.array.tolist()) for o in everything] == [
        ("prediction", "FP32", [1.5, 0.5]),
        ("spread", "FP32", [0.25, 0.0]),
    ]
    without_spread = v2.outputs(answers[:, :1], [("*", False)], regression)
    assert [o.name for o in without_spread] == ["prediction"]
    with pytest.raises(InputError, match="output 'label': this model gives prediction, spread"):
        v2.outputs(answers, [("label", False)], regression)


def test_datatypes_decode_the_same_and_refuse_the_same_every_time():
    # Each accepted datatype's dtype is looked up once and kept; a refusal is never kept, so
    # the first and the hundredth request get the same answer, bit for bit or word for word.
    raw = ROWS.astype("<f4").tobytes()
    first = _matrix(v2.grpc_request(_grpc([raw])))
    for _ in range(3):
        again = _matrix(v2.grpc_request(_grpc([raw])))
        assert again.tobytes() == first.tobytes()
        for datatype, says in (("FP33", "unknown datatype 'FP33'"), ("BYTES", "FP32 is required")):
            with pytest.raises(InputError) as raised:
                v2.grpc_request(_grpc([raw], datatype=datatype))
            assert says in raised.value.message
        # An accepted datatype other than FP32 decodes (as its own values), then the schema
        # refuses it by name, as on the first request.
        wide = v2.grpc_request(_grpc([ROWS.astype("<f8").tobytes()], datatype="FP64"))
        np.testing.assert_array_equal(wide.inputs[0].data, ROWS.astype(np.float64).ravel())
        with pytest.raises(InputError, match="datatype FP64; FP32 is required"):
            _matrix(wide)
