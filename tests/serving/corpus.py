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
