"""Malformed requests every server build must answer with a 4xx and {"error": ...}, never a 5xx."""

from __future__ import annotations

import json

X = {"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}


def _with(**changes: object) -> bytes:
    return json.dumps({"inputs": [{**X, **changes}]}).encode()


# (id, path on the "linear" model server, body bytes, expected status, words the error must contain)
CASES: list[tuple[str, str, bytes, int, str]] = [
    ("malformed json", "/v2/models/linear/infer", b'{"inputs": [', 400, "malformed JSON"),
    ("not json at all", "/v2/models/linear/infer", b"\x00\xff\xfe garbage", 400, "malformed JSON"),
    ("empty body", "/v2/models/linear/infer", b"", 400, "empty"),
    ("json array body", "/v2/models/linear/infer", b"[1, 2]", 400, "JSON object"),
    ("NaN literal", "/v2/models/linear/infer", _with().replace(b"0.5", b"NaN", 1), 400, "malformed JSON"),
    ("unknown model", "/v2/models/nope/infer", _with(), 404, "unknown model"),
    ("no inputs", "/v2/models/linear/infer", b'{"inputs": []}', 400, "inputs"),
    ("inputs not objects", "/v2/models/linear/infer", b'{"inputs": [1]}', 400, "inputs"),
    ("missing input", "/v2/models/linear/infer", b'{"inputs": [{"name": "z"}]}', 400, "unknown input"),
    (
        "extra input",
        "/v2/models/linear/infer",
        json.dumps({"inputs": [X, {**X, "name": "extra"}]}).encode(),
        400,
        "unknown input",
    ),
    ("duplicate input", "/v2/models/linear/infer", json.dumps({"inputs": [X, X]}).encode(), 400, "more than once"),
    ("wrong datatype", "/v2/models/linear/infer", _with(datatype="FP64"), 400, "datatype"),
    ("unknown datatype", "/v2/models/linear/infer", _with(datatype="FLOAT"), 400, "datatype"),
    ("strings for FP32", "/v2/models/linear/infer", _with(data=["1.0"] * 16), 400, "strings"),
    ("shape rank", "/v2/models/linear/infer", _with(shape=[16]), 400, "does not match"),
    ("shape fixed dim", "/v2/models/linear/infer", _with(shape=[2, 8]), 400, "does not match"),
    ("shape not ints", "/v2/models/linear/infer", _with(shape=[1, "16"]), 400, "shape"),
    ("shape negative", "/v2/models/linear/infer", _with(shape=[-1, 16]), 400, "below 1"),
    ("shape vs data length", "/v2/models/linear/infer", _with(shape=[2, 16]), 400, "elements"),
    ("ragged nested data", "/v2/models/linear/infer", _with(data=[[0.5] * 16, [0.5]]), 400, "regular"),
    ("data not array", "/v2/models/linear/infer", _with(data=5), 400, "data"),
    (
        "data missing",
        "/v2/models/linear/infer",
        json.dumps({"inputs": [{k: v for k, v in X.items() if k != "data"}]}).encode(),
        400,
        "missing",
    ),
    (
        "infinity via overflow",
        "/v2/models/linear/infer",
        _with(data=[1.0] * 16).replace(b"1.0", b"1e400"),
        400,
        "infinity",
    ),
    ("FP32 overflow", "/v2/models/linear/infer", _with(data=[1e39] * 16), 400, "infinity"),
    ("huge shape", "/v2/models/linear/infer", _with(shape=[10**12, 16]), 400, "elements"),
    ("huger shape", "/v2/models/linear/infer", _with(shape=[2**70, 16]), 400, "shape"),
    ("deeply nested json", "/v2/models/linear/infer", b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON"),
    ("deeply nested data", "/v2/models/linear/infer", _with(data=json.loads("[" * 500 + "]" * 500)), 400, "data"),
    ("id not string", "/v2/models/linear/infer", json.dumps({"id": 5, "inputs": [X]}).encode(), 400, "id"),
    (
        "unknown output",
        "/v2/models/linear/infer",
        json.dumps({"inputs": [X], "outputs": [{"name": "q"}]}).encode(),
        400,
        "unknown output",
    ),
    ("predict without instances", "/predict", b'{"inputs": []}', 400, "instances"),
    ("predict ragged", "/predict", b'{"instances": [[1, 2], [3]]}', 400, "regular"),
    ("predict wrong width", "/predict", b'{"instances": [[1, 2]]}', 400, "does not match"),
    ("predict strings", "/predict", b'{"instances": [["a"]]}', 400, "strings"),
    ("unknown route", "/v2/nothing", b"{}", 404, "Not Found"),
    ("v1 unknown model", "/v1/models/nope:predict", b'{"instances": [[0]]}', 404, "unknown model"),
    ("model versions unsupported", "/v2/models/linear/versions/1/infer", _with(), 404, "Not Found"),
]

# Cases for the INT64/BOOL/FP16 model ("multi").
_M = [
    {"name": "ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
    {"name": "mask", "shape": [1, 3], "datatype": "BOOL", "data": [True, False, True]},
    {"name": "half", "shape": [1, 2], "datatype": "FP16", "data": [1.0, 2.0]},
]


def _multi(index: int, **changes: object) -> bytes:
    inputs = [dict(t) for t in _M]
    inputs[index].update(changes)
    return json.dumps({"inputs": inputs}).encode()


MULTI_CASES: list[tuple[str, bytes, int, str]] = [
    ("missing one input", json.dumps({"inputs": _M[:2]}).encode(), 400, "missing input"),
    ("floats for INT64", _multi(0, data=[1.5, 2, 3]), 400, "non-integers"),
    ("INT64 overflow", _multi(0, data=[2**64, 2, 3]), 400, "INT64"),
    ("numbers for BOOL", _multi(1, data=[1, 0, 1]), 400, "BOOL"),
    ("FP16 overflow", _multi(2, data=[1.0, 70000.0]), 400, "infinity"),
    ("batch sizes disagree", _multi(2, shape=[2, 2], data=[1.0, 2.0, 3.0, 4.0]), 400, "batch"),
    ("index out of range (ORT rejects)", _multi(0, data=[1, 2, 99]), 400, "rejected"),
]


# The binary tensor data extension on the "linear" model: (id, Inference-Header-Content-Length, body, status, words).
def _binary(raw: bytes, size: int | None = None, header_extra: int = 0, **changes: object) -> tuple[str, bytes]:
    tensor = {"name": "x", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    head = json.dumps({"inputs": [{**tensor, **changes}]}).encode()
    return str(len(head) + header_extra), head + raw


_ROW = b"\x00\x00\x00\x3f" * 16  # sixteen 0.5s, little-endian FP32

BINARY_CASES: list[tuple[str, str, bytes, int, str]] = [
    ("header past the body", *_binary(_ROW, header_extra=10_000), 400, "past the end"),
    ("header not a number", "12x", _binary(_ROW)[1], 400, "byte count"),
    ("header cuts the json", str(len(_binary(_ROW)[1]) - len(_ROW) - 5), _binary(_ROW)[1], 400, "malformed JSON"),
    ("bytes short of shape x dtype", *_binary(_ROW[:60]), 400, "needs 64"),
    ("bytes beyond shape x dtype", *_binary(_ROW + b"\x00" * 4), 400, "needs 64"),
    ("size past the body (truncated)", *_binary(_ROW[:32], size=64), 400, "runs past the body"),
    ("bytes left after the inputs", *_binary(_ROW + b"\x00" * 4, size=64), 400, "follow"),
    ("unknown datatype", *_binary(_ROW, datatype="FLOAT32"), 400, "unknown datatype"),
    ("size not an integer", *_binary(_ROW, size="64"), 400, "binary_data_size"),  # type: ignore[arg-type]
    ("data and binary both", *_binary(_ROW, data=[0.5] * 16), 400, "both"),
    ("NaN in binary data", *_binary(b"\x00\x00\xc0\x7f" * 16), 400, "NaN"),
    ("huge shape in binary", *_binary(_ROW, shape=[10**12, 16]), 400, "elements"),
]
# Without the header, a binary_data_size has no bytes to point at.
NO_HEADER_BINARY = _binary(_ROW)[1][: -len(_ROW)]  # the JSON part alone
