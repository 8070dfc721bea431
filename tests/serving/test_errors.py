"""Every malformed request gets a 4xx with {"error": ...} naming the problem (in-process app)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.app import create_app
from serving.settings import Settings
from tests.serving.corpus import CASES, MULTI_CASES

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
