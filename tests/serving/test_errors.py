"""Every malformed request gets a 4xx with {"error": ...} naming the problem (in-process app)."""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.app import create_app
from serving.settings import Settings
from tests.serving.corpus import BINARY_CASES, CASES, MULTI_CASES, NO_HEADER_BINARY

with warnings.catch_warnings():  # starlette 1.x nudges TestClient users towards httpx2; httpx is what we pin
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def linear(model_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_root / "linear", warmup_runs=1))) as c:
        yield c


@pytest.fixture(scope="module")
def multi(model_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_root / "multi", warmup_runs=1))) as c:
        yield c


@pytest.mark.parametrize(("path", "body", "status", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request(linear: TestClient, path: str, body: bytes, status: int, words: str) -> None:
    r = linear.post(path, content=body)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"].lower()


@pytest.mark.parametrize(("body", "status", "words"), [c[1:] for c in MULTI_CASES], ids=[c[0] for c in MULTI_CASES])
def test_bad_request_multi(multi: TestClient, body: bytes, status: int, words: str) -> None:
    r = multi.post("/v2/models/multi/infer", content=body)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"].lower()


def test_wrong_method_and_too_many_elements(model_root: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_root / "linear", warmup_runs=0, max_elements=32))) as c:
        r = c.get("/v2/models/linear/infer")
        assert r.status_code == 405 and "error" in r.json()
        body = {"inputs": [{"name": "x", "shape": [3, 16], "datatype": "FP32", "data": [0.0] * 48}]}
        r = c.post("/v2/models/linear/infer", json=body)
        assert r.status_code == 400 and "48 elements" in r.json()["error"]
        assert c.post("/predict", json={"instances": [[0.0] * 16] * 3}).status_code == 400


def test_body_limit_by_content_length(model_root: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_root / "linear", warmup_runs=0, max_body_bytes=4096))) as c:
        r = c.post("/v2/models/linear/infer", content=b"x" * 5000)
        assert r.status_code == 413 and "4096" in r.json()["error"]
        assert r.headers["connection"] == "close"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b"y" * 1000

        r = c.post("/v2/models/linear/infer", content=chunks())
        assert r.status_code == 413


@pytest.mark.parametrize(
    ("header", "body", "status", "words"), [c[1:] for c in BINARY_CASES], ids=[c[0] for c in BINARY_CASES]
)
def test_bad_binary_request(linear: TestClient, header: str, body: bytes, status: int, words: str) -> None:
    r = linear.post("/v2/models/linear/infer", content=body, headers={"Inference-Header-Content-Length": header})
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"].lower()


def test_binary_size_without_the_header_is_refused(linear: TestClient) -> None:
    r = linear.post("/v2/models/linear/infer", content=NO_HEADER_BINARY)
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]


def _raw_request(client: TestClient, model: str, tensors: list[tuple[dict[str, object], bytes]]) -> httpx.Response:
    head = json.dumps({"inputs": [{**t, "parameters": {"binary_data_size": len(raw)}} for t, raw in tensors]}).encode()
    body = head + b"".join(raw for _, raw in tensors)
    return client.post(
        f"/v2/models/{model}/infer", content=body, headers={"Inference-Header-Content-Length": str(len(head))}
    )


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (struct.pack("<I", 3) + b"abc" + struct.pack("<I", 9) + b"de", "fewer are left"),
        (struct.pack("<I", 3) + b"abc" + b"\x01\x00", "ends inside element 1"),
        (struct.pack("<I", 2) + b"\xff\xfe" + struct.pack("<I", 0), "not UTF-8"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b" + b"extra", "bytes left"),
    ],
    ids=["length past the end", "truncated length", "not utf-8", "bytes after the elements"],
)
def test_bad_binary_strings(model_root: Path, raw: bytes, words: str) -> None:
    with TestClient(create_app(Settings(model_dir=model_root / "strings", warmup_runs=0))) as c:
        r = _raw_request(c, "strings", [({"name": "text", "shape": [1, 2], "datatype": "BYTES"}, raw)])
        assert r.status_code == 400, r.text
        assert words.lower() in r.json()["error"].lower()


def test_bad_binary_bool_and_leftover_mixed(multi: TestClient) -> None:
    ids = ({"name": "ids", "shape": [1, 3], "datatype": "INT64"}, np.array([[1, 2, 3]], np.int64).tobytes())
    half = ({"name": "half", "shape": [1, 2], "datatype": "FP16"}, np.ones((1, 2), np.float16).tobytes())
    mask = {"name": "mask", "shape": [1, 3], "datatype": "BOOL"}
    r = _raw_request(multi, "multi", [ids, (mask, b"\x01\x02\x00"), half])
    assert r.status_code == 400 and "0 or 1" in r.json()["error"]
    r = _raw_request(multi, "multi", [ids, (mask, b"\x01\x00\x00"), half])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][1]["data"] == [1.0, 0.0, 0.0]
