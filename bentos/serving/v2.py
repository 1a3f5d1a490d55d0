"""The Open Inference Protocol (KServe V2), shared by the REST routes and the gRPC server.

Both models take one input tensor `features` (FP32, [N, n_features], the schema's order) and
give `label` (INT64 [N], the class index) and `probabilities` (FP32 [N, n_classes]). Checking
a request's tensors and building a response's are here once; the transports only move bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

import bentos
from bentos.errors import InputError
from bentos.runners import Runner
from bentos.schema import parse_json

PROTOCOL = "v2"
SERVER_NAME = "bentos"
EXTENSIONS = ["binary_tensor_data"]
INPUT = "features"
OUTPUTS = ("label", "probabilities")
PLATFORMS = {"rf": "sklearn", "tflite": "tflite"}
_DTYPES = {"FP32": np.float32, "INT64": np.int64}


class V2Error(Exception):
    """A request the protocol refuses: 400 (INVALID_ARGUMENT) or 404 (NOT_FOUND)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Output:
    name: str
    array: np.ndarray
    datatype: str
    binary: bool


def version_of(runner: Runner) -> str:
    return runner.tag.split(":", 1)[1]


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": bentos.__version__, "extensions": EXTENSIONS}


def model_metadata(name: str, runner: Runner) -> dict[str, Any]:
    schema = runner.schema
    return {
        "name": name,
        "versions": [version_of(runner)],
        "platform": PLATFORMS.get(name, "unknown"),
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, len(schema.features)]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(schema.labels)]},
        ],
        "parameters": {
            "tag": runner.tag,
            "feature_names": json.dumps(schema.names),
            "class_labels": json.dumps(list(schema.labels)),
        },
    }


def check_features(
    runner: Runner, name: str, datatype: str, shape: list[int], data: np.ndarray, max_rows: int
) -> np.ndarray:
    """One input tensor to the model's float matrix, or V2Error saying what was wrong."""
    n_features = len(runner.schema.features)
    if name != INPUT:
        raise V2Error(400, f"unknown input tensor {name!r}; the model takes one input, {INPUT!r}")
    if datatype != "FP32":
        raise V2Error(400, f"input {INPUT!r} has datatype {datatype}; FP32 is required")
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise V2Error(
            400,
            f"input {INPUT!r} has shape {list(shape)}; [N, {n_features}] is required, N >= 1, "
            f"features in this order: {', '.join(runner.schema.names)}",
        )
    if shape[0] > max_rows:
        raise V2Error(400, f"input {INPUT!r} has {shape[0]} rows; at most {max_rows} are allowed")
    if data.size != shape[0] * shape[1]:
        raise V2Error(
            400,
            f"input {INPUT!r} has {data.size} values; shape {list(shape)} needs {shape[0] * shape[1]}",
        )
    try:
        return runner.schema.validate_matrix(data.reshape(shape))
    except InputError as exc:
        raise V2Error(400, f"input {INPUT!r}: {exc.message}") from None


def requested_outputs(requested: Any, binary_default: bool) -> list[tuple[str, bool]]:
    """(name, as binary?) for each output a request asked for (all when it named none)."""
    if requested is None:
        return [(n, binary_default) for n in OUTPUTS]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise V2Error(400, "'outputs' must be a list of objects with a 'name'")
    out = []
    for spec in requested:
        name = spec.get("name")
        if name not in OUTPUTS:
            raise V2Error(400, f"unknown output {name!r}; the model gives {', '.join(OUTPUTS)}")
        out.append((name, bool((spec.get("parameters") or {}).get("binary_data", binary_default))))
    return out


def build_outputs(proba: np.ndarray, wanted: list[tuple[str, bool]]) -> list[Output]:
    arrays = {
        "label": (np.argmax(proba, axis=1).astype(np.int64), "INT64"),
        "probabilities": (np.ascontiguousarray(proba, dtype=np.float32), "FP32"),
    }
    return [Output(name, *arrays[name], binary) for name, binary in wanted]


# -- REST encoding (JSON, with the binary tensor data extension) ----------------------------------


def decode_rest(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """Split a REST infer body into its JSON part and its binary part."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise V2Error(
                400, f"Inference-Header-Content-Length {header_length!r} is not a number"
            ) from None
        if not 0 <= n <= len(body):
            raise V2Error(
                400, f"Inference-Header-Content-Length {n} is outside the body ({len(body)} bytes)"
            )
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        request = parse_json(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise V2Error(400, f"malformed JSON: {exc}") from None
    if not isinstance(request, dict):
        raise V2Error(400, "the request must be a JSON object with 'inputs'")
    return request, binary


def rest_input(request: dict[str, Any], binary: bytes) -> tuple[str, str, list[int], np.ndarray]:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise V2Error(400, f"'inputs' must be a list of exactly one tensor, {INPUT!r}")
    tensor = inputs[0]
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise V2Error(400, f"input {name!r}: 'shape' must be a list of integers")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if datatype not in _DTYPES:
            raise V2Error(400, f"input {name!r} has datatype {datatype}; FP32 is required")
        if not isinstance(size, int) or size != len(binary):
            raise V2Error(
                400,
                f"input {name!r}: binary_data_size {size} but {len(binary)} bytes follow the JSON",
            )
        if size % np.dtype(_DTYPES[datatype]).itemsize:
            raise V2Error(
                400, f"input {name!r}: {size} bytes is not a whole number of {datatype} values"
            )
        return (
            name,
            datatype,
            shape,
            np.frombuffer(binary, dtype=np.dtype(_DTYPES[datatype]).newbyteorder("<")),
        )
    data = tensor.get("data")
    if data is None:
        raise V2Error(400, f"input {name!r} has no 'data' (nor binary data)")
    flat = _flatten(data)
    if not all(type(v) is float or type(v) is int for v in flat):
        bad = next(v for v in flat if not (type(v) is float or type(v) is int))
        raise V2Error(400, f"input {name!r}: every value must be a number, got {json.dumps(bad)}")
    return name, datatype, shape, np.asarray(flat, dtype=np.float64)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        return [v for row in data for v in _flatten(row)]
    return data


def encode_rest(
    model: str, version: str, request_id: str | None, outs: list[Output]
) -> tuple[bytes, dict[str, str]]:
    tensors, blobs = [], []
    for o in outs:
        tensor: dict[str, Any] = {
            "name": o.name,
            "datatype": o.datatype,
            "shape": list(o.array.shape),
        }
        if o.binary:
            raw = o.array.astype(o.array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = o.array.ravel().tolist()
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request_id is not None:
        response["id"] = request_id
    head = orjson.dumps(response)
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {
        "content-type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
