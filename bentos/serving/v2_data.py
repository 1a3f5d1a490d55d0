"""A V2 tensor's data as a request carries it, decoded: JSON `data` (numbers, booleans, text or
null, flat or nested row-major) or raw little-endian bytes (the binary tensor data extension and
gRPC's raw contents; BYTES as length-prefixed elements). Datatypes and their numpy types are
tritonclient's. Used by bentos.serving.v2 for both transports; every refusal an InputError.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from bentos.errors import InputError
from bentos.schema import TENSOR

# gRPC's typed contents field for each datatype (FP16 and BF16 travel as raw bytes only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(
            f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}",
            [(None, name, "shape")],
        )
    return list(shape)


def numeric_dtype(name: str, datatype: Any) -> np.dtype:
    known = _DTYPES.get(datatype) if isinstance(datatype, str) else None
    if known is not None:
        return known
    dtype = triton_to_np_dtype(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InputError(
            f"input {name!r}: unknown datatype {datatype!r}; the protocol's are "
            f"{', '.join(sorted(CONTENTS))}, FP16, BF16",
            [(None, name, "datatype")],
        )
    if dtype is np.object_ or np.dtype(dtype).kind not in "biuf":
        raise InputError(
            f"input {name!r} has datatype {datatype}; FP32 is required",
            [(None, name, "datatype")],
        )
    _DTYPES[datatype] = np.dtype(dtype).newbyteorder("<")
    return _DTYPES[datatype]


# Each accepted datatype's little-endian dtype, found once: the lookup and the byte order cost
# more than the rest of decoding a request's raw tensor. Refusals are never cached.
_DTYPES: dict[str, np.dtype] = {}


def raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> np.ndarray:
    """A tensor's raw little-endian bytes, which must be exactly its shape's worth."""
    if datatype == "BYTES" and name != TENSOR:  # `features` is numbers, whatever else it holds
        return raw_bytes(name, shape, bytes(raw))
    dtype = numeric_dtype(name, datatype)
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise InputError(
            f"input {name!r}: {len(raw)} bytes of raw data, but shape {shape} of {datatype} "
            f"needs {count * dtype.itemsize} ({count} values of {dtype.itemsize} bytes)",
            [(None, name, "raw size")],
        )
    return np.frombuffer(raw, dtype=dtype)


def raw_bytes(name: str, shape: list[int], raw: bytes) -> np.ndarray:
    """The protocol's BYTES encoding: each element a 4-byte little-endian length, then its bytes."""
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            break
        n = int.from_bytes(raw[at : at + 4], "little")
        out.append(raw[at + 4 : at + 4 + n])
        at += 4 + n
    if at != len(raw) or len(out) != math.prod(shape):
        raise InputError(
            f"input {name!r}: the BYTES data does not hold {math.prod(shape)} length-prefixed "
            f"elements for shape {shape}",
            [(None, name, "raw size")],
        )
    return text(name, out)


def text(name: str, values: list[Any]) -> np.ndarray:
    try:
        return np.array(
            [v.decode() if isinstance(v, bytes) else v for v in values] or [], dtype=object
        )
    except UnicodeDecodeError:
        raise InputError(
            f"input {name!r}: a BYTES element is not UTF-8 text", [(None, name, "not text")]
        ) from None


def flat(name: str, data: Any, datatype: str = "FP32") -> np.ndarray:
    """JSON `data`, flat or nested row-major, as numbers (BYTES: text or null; BOOL: booleans,
    as 1 and 0)."""
    flat, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    if datatype == "BYTES":
        bad = [v for v in flat if not (v is None or isinstance(v, str))][:1]
        if bad:
            raise InputError(
                f"input {name!r}: a BYTES value must be text or null, got {json.dumps(bad[0])}",
                [(None, name, "not text")],
            )
        return text(name, flat)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            bad = next(v for v in flat if not isinstance(v, bool))
            raise InputError(
                f"input {name!r}: a BOOL value must be true or false, got {json.dumps(bad)}",
                [(None, name, "not a boolean")],
            )
        return np.asarray(flat, dtype=np.float64)
    bad = [v for v in flat if not (type(v) is float or type(v) is int)][:1]  # bool is not int here
    if bad:
        raise InputError(
            f"input {name!r}: every value must be a number, got {json.dumps(bad[0])}",
            [(None, name, "not a number")],
        )
    try:
        return np.asarray(flat, dtype=np.float64)
    except OverflowError:
        raise InputError(
            f"input {name!r}: a value is too large for a number", [(None, name, "not a number")]
        ) from None
