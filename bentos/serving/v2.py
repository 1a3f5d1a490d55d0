"""The Open Inference Protocol (KServe V2) codec: one for the REST routes and the gRPC server.

A model takes one input tensor per column of its table ([N], BYTES for text and dates, BOOL for
booleans, a number type for numbers), as MLServer's pandas codec sends a DataFrame; a model whose
features are all numbers also takes the one tensor `features` (FP32, [N, n_features], the
schema's order) that tritonclient and KServe's SDK send. Both give `label` (INT64 [N], the class
index) and `probabilities` (FP32 [N, n_classes]). A request is decoded here into tensors,
whatever its transport; the schema then checks them (bentos.schema.FeatureSchema.validate_tensors),
and the answer is encoded here again. Datatypes and their numpy types are tritonclient's
(`tritonclient.utils`), the maps Triton's clients use. Every refusal is an InputError (a 400)
saying what was wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

import bentos
from bentos.errors import InputError
from bentos.schema import TENSOR, parse_json
from bentos.serving import v2_data

SERVER_NAME = "bentos"
EXTENSIONS = ["binary_tensor_data"]
OUTPUTS = ("label", "probabilities")
# A regression's: the number (FP32 [N]), and for the forest its trees' spread (FP32 [N]).
REGRESSION_OUTPUTS = ("prediction", "spread")
_ALL = "*"  # no output named: every output of the model


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # flat, in row-major order; BYTES: objects (str, or None for a JSON null)


@dataclass
class Request:
    id: str | None
    inputs: list[Tensor]
    outputs: list[tuple[str, bool]] = field(default_factory=list)  # (name, as binary?)


@dataclass
class Output:
    name: str
    array: np.ndarray
    datatype: str
    binary: bool


# -- the decoded request -------------------------------------------------------------------------


def features(
    schema: Any, request: Request, max_rows: int, unknown: dict[str, int] | None = None
) -> np.ndarray:
    """The request's input tensors as the model's valid feature matrix."""
    return schema.validate_tensors(request.inputs, max_rows, unknown)


def rows(schema: Any, request: Request) -> list[dict[str, Any]]:
    """A valid request's rows as the client sent them, field by field, for the prediction log:
    the one `features` tensor split into rows, or one value of each column's tensor per row."""
    tensors = request.inputs
    if len(tensors) == 1 and tensors[0].name == TENSOR and TENSOR not in schema.names:
        names = schema.names
        flat = tensors[0].data.reshape(-1, len(names)).tolist()
        return [dict(zip(names, r, strict=True)) for r in flat]
    columns = {t.name: t.data.tolist() for t in tensors}
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def _outputs(requested: Any, binary_default: bool) -> list[tuple[str, bool]]:
    """(name, as binary?) for each output a request asked for (all when it named none: which
    they are, the model decides, `outputs`)."""
    if requested is None:
        return [(_ALL, binary_default)]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise InputError(
            "'outputs' must be a list of objects with a 'name'", [(None, "outputs", "shape")]
        )
    out = []
    for spec in requested:
        name = spec.get("name")
        if name not in OUTPUTS + REGRESSION_OUTPUTS:
            raise InputError(
                f"unknown output {name!r}; a model gives {', '.join(OUTPUTS)} "
                f"(a regression: {', '.join(REGRESSION_OUTPUTS)})",
                [(None, "outputs", "unknown output")],
            )
        params = spec.get("parameters") or {}
        binary = params.get("binary_data", binary_default) if isinstance(params, dict) else None
        out.append((name, bool(binary)))
    return out


# -- REST: JSON, with the binary tensor data extension -------------------------------------------


def rest_request(body: bytes, header_length: str | None) -> Request:
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()):
            raise InputError(f"Inference-Header-Content-Length {header_length!r} is not a number")
        n = int(header_length)
        if n > len(body):
            raise InputError(
                f"Inference-Header-Content-Length {n} is outside the body ({len(body)} bytes)"
            )
        # The tensors are read in place (np.frombuffer over the body), not copied out of it.
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    request = parse_json(head)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InputError(
            "the request must be a JSON object with 'inputs', a list of tensors",
            [(None, "inputs", "missing")],
        )
    tensors, offset = [], 0
    for i, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict):
            raise InputError(f"inputs[{i}] must be an object", [(i, "inputs", "not an object")])
        name, datatype = str(tensor.get("name")), tensor.get("datatype")
        shape = v2_data.shape(name, tensor.get("shape"))
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InputError(f"input {name!r}: binary_data_size {size!r} is not a size")
            if offset + size > len(binary):
                raise InputError(
                    f"input {name!r}: binary_data_size {size}, but only {len(binary) - offset} "
                    "bytes follow",
                )
            data = v2_data.raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in tensor:
            if datatype != "BYTES" or name == TENSOR:
                v2_data.numeric_dtype(name, datatype)
            data = v2_data.flat(name, tensor["data"], str(datatype))
        else:
            raise InputError(f"input {name!r} has no 'data' (nor binary data)")
        tensors.append(Tensor(name, str(datatype), shape, data))
    if offset != len(binary):
        raise InputError(f"{len(binary) - offset} bytes after the JSON belong to no input")
    params = request.get("parameters") or {}
    binary_out = (
        bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    )
    request_id = request.get("id") if isinstance(request.get("id"), str) else None
    return Request(request_id, tensors, _outputs(request.get("outputs"), binary_out))


def rest_response(
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


# -- gRPC -----------------------------------------------------------------------------------------


def grpc_request(request: Any) -> Request:
    """A tritonclient `ModelInferRequest` decoded: raw contents, one entry per input, or typed
    contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InputError(
            f"the request has {len(raw)} raw input contents for {len(request.inputs)} inputs; "
            "give one per input, in the inputs' order",
            [(None, "raw_input_contents", "count")],
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        name, datatype, shape = (
            tensor.name,
            tensor.datatype,
            v2_data.shape(tensor.name, list(tensor.shape)),
        )
        if raw:
            if tensor.HasField("contents"):
                raise InputError(f"input {name!r} has both raw and typed contents; give one")
            data = v2_data.raw(name, datatype, shape, raw[i])
        elif datatype == "BYTES" and name != TENSOR:
            data = v2_data.text(name, list(tensor.contents.bytes_contents))
        else:
            v2_data.numeric_dtype(name, datatype)
            values = getattr(tensor.contents, v2_data.CONTENTS.get(datatype, "fp32_contents"))
            data = np.asarray(values, dtype=np.float64)
        tensors.append(Tensor(name, datatype, shape, data))
    wanted = [{"name": o.name} for o in request.outputs] or None
    return Request(request.id or None, tensors, _outputs(wanted, True))


def grpc_response(model: str, version: str, request_id: str | None, outs: list[Output]) -> Any:
    from tritonclient.grpc import service_pb2 as pb

    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    for out in outs:
        response.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.array.shape))
        response.raw_output_contents.append(
            out.array.astype(out.array.dtype.newbyteorder("<"), copy=False).tobytes()
        )
    return response


# -- answers --------------------------------------------------------------------------------------


def model_outputs(schema: Any, spread: bool) -> tuple[str, ...]:
    """The outputs a model gives: a classifier's label and probabilities; a regression's
    prediction, and its spread when it has one (the forest)."""
    if schema.regression:
        return REGRESSION_OUTPUTS if spread else REGRESSION_OUTPUTS[:1]
    return OUTPUTS


def outputs(proba: np.ndarray, wanted: list[tuple[str, bool]], schema: Any) -> list[Output]:
    """The answer's tensors from a model's answers (bentos.runners), as the request asked."""
    if schema.regression:
        arrays = {"prediction": (np.ascontiguousarray(proba[:, 0], dtype=np.float32), "FP32")}
        if proba.shape[1] > 1:
            arrays["spread"] = (np.ascontiguousarray(proba[:, 1], dtype=np.float32), "FP32")
    else:
        arrays = {
            "label": (np.argmax(proba, axis=1).astype(np.int64), "INT64"),
            "probabilities": (np.ascontiguousarray(proba, dtype=np.float32), "FP32"),
        }
    out = []
    for name, binary in wanted:
        if name == _ALL:
            out += [Output(n, *arrays[n], binary) for n in arrays]
        elif name in arrays:
            out.append(Output(name, *arrays[name], binary))
        else:
            raise InputError(
                f"output {name!r}: this model gives {', '.join(arrays)}",
                [(None, "outputs", "unknown output")],
            )
    return out


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": bentos.__version__, "extensions": EXTENSIONS}


# The datatype a model's metadata gives each kind of column (one tensor per column).
DATATYPES = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES", "datetime": "BYTES"}


def inputs(schema: Any) -> list[dict[str, Any]]:
    """The inputs a model's metadata lists: `features` for an all-numeric model (the tensor
    tritonclient and KServe's SDK send), one per column otherwise."""
    if schema.plain:
        return [{"name": TENSOR, "datatype": "FP32", "shape": [-1, len(schema.features)]}]
    return [{"name": f.name, "datatype": DATATYPES[f.kind], "shape": [-1]} for f in schema.features]


def model_metadata(model: Any) -> dict[str, Any]:
    """The metadata of a served model (bentos.serving.core.ServedModel)."""
    schema = model.runner.schema
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": inputs(schema),
        "outputs": output_metadata(schema, model.runner.spread),
        "parameters": {
            "tag": model.runner.tag,
            "task": schema.task,
            "feature_names": json.dumps(schema.names),
            "class_labels": json.dumps(list(schema.labels)),
        },
    }


def output_metadata(schema: Any, spread: bool) -> list[dict[str, Any]]:
    if schema.regression:
        return [
            {"name": n, "datatype": "FP32", "shape": [-1]} for n in model_outputs(schema, spread)
        ]
    return [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(schema.labels)]},
    ]
