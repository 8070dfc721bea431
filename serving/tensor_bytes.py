"""Tensors as raw bytes, the layout both the binary tensor data extension (REST) and gRPC's
``raw_input_contents`` use: row-major, little-endian, no padding; a BYTES element is its length as a
4-byte little-endian integer followed by that many bytes. Every check a client can fail is made here.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from serving.errors import BadRequest
from serving.model import TensorSpec

_LENGTH = struct.Struct("<I")


def _strings(spec: TensorSpec, raw: memoryview, count: int) -> np.ndarray:
    out, at = np.empty(count, dtype=object), 0
    for i in range(count):
        if at + 4 > len(raw):
            raise BadRequest(f"input {spec.name!r}: BYTES data ends inside element {i} of {count}")
        (size,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + size > len(raw):
            raise BadRequest(f"input {spec.name!r}: BYTES element {i} says {size} bytes, fewer are left")
        try:
            out[i] = str(raw[at : at + size], "utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"input {spec.name!r}: BYTES element {i} is not UTF-8 text") from None
        at += size
    if at != len(raw):
        raise BadRequest(f"input {spec.name!r}: {len(raw) - at} bytes left after the {count} BYTES elements")
    return out


def from_bytes(
    spec: TensorSpec, shape: tuple[int, ...], raw: bytes | memoryview, budget: int, allow_nonfinite: bool
) -> np.ndarray:
    """Raw bytes -> an array of ``spec``'s dtype and ``shape`` (checked against the model by the caller)."""
    count = math.prod(shape)
    if count > budget:
        raise BadRequest(
            f"input {spec.name!r}: shape {list(shape)} has {count} elements, more than the {budget} allowed"
        )
    view = memoryview(raw).cast("B")
    if spec.datatype == "BYTES":
        return _strings(spec, view, count).reshape(shape)
    dtype = spec.dtype.newbyteorder("<")
    needed = count * dtype.itemsize
    if len(view) != needed:
        raise BadRequest(
            f"input {spec.name!r}: {len(view)} bytes given; shape {list(shape)} of {spec.datatype} needs {needed}"
        )
    if spec.datatype == "BOOL":
        flags = np.frombuffer(view, dtype=np.uint8)
        if flags.size and flags.max() > 1:
            raise BadRequest(f"input {spec.name!r}: BOOL bytes must be 0 or 1")
        return flags.view(np.bool_).reshape(shape)
    arr = np.frombuffer(view, dtype=dtype)
    if not arr.flags.aligned:  # a tensor packed after another at an odd offset: ORT wants aligned data
        arr = arr.copy()
    if spec.dtype.kind == "f" and not allow_nonfinite and not np.isfinite(arr).all():
        raise BadRequest(f"input {spec.name!r}: NaN or infinity")
    return arr.reshape(shape)


def to_bytes(arr: np.ndarray) -> bytes:
    """An output array -> its raw bytes (BYTES: each element length-prefixed)."""
    if arr.dtype == object:
        parts = []
        for value in arr.flat:
            data = value if isinstance(value, bytes) else str(value).encode()
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
