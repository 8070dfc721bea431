"""The ASGI app in-process (starlette TestClient runs the lifespan): protocol, metadata, readiness, errors."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.app import create_app
from serving.errors import ModelError
from serving.model import Model
from serving.settings import Settings
from tests.serving import models

with warnings.catch_warnings():  # starlette 1.x nudges TestClient users towards httpx2; httpx is what we pin
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


def client_for(model_dir: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(model_dir=model_dir, warmup_runs=1, **settings)))


@pytest.fixture(scope="module")
def linear(model_root: Path) -> Iterator[TestClient]:
    with client_for(model_root / "linear") as c:
        yield c


@pytest.fixture(scope="module")
def multi(model_root: Path) -> Iterator[TestClient]:
    with client_for(model_root / "multi") as c:
        yield c


def infer(client: TestClient, body: object, model: str = "linear") -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", content=json.dumps(body))


def test_health_and_server_metadata(linear: TestClient) -> None:
    assert linear.get("/v2/health/live").json() == {"live": True}
    r = linear.get("/v2/health/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert linear.get("/v2/models/linear/ready").json() == {"name": "linear", "ready": True}
    assert linear.get("/v2").json()["name"] == "modelstack-serving"


def test_model_metadata_comes_from_the_onnx_signature(linear: TestClient, multi: TestClient) -> None:
    meta = linear.get("/v2/models/linear").json()
    assert meta["name"] == "linear" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    meta = multi.get("/v2/models/multi").json()
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        ("ids", "INT64"),
        ("mask", "BOOL"),
        ("half", "FP16"),
    ]
    assert [t["datatype"] for t in meta["outputs"]] == ["FP32", "FP32", "FP16"]


def test_infer_matches_numpy_flat_and_nested(linear: TestClient) -> None:
    _, w, b = models.linear_model()
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    expected = x @ w + b
    for data in (x.reshape(-1).tolist(), x.tolist()):
        r = infer(linear, {"id": "42", "inputs": [{"name": "x", "shape": [3, 16], "datatype": "FP32", "data": data}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "42" and body["model_name"] == "linear"
        (out,) = body["outputs"]
        assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [3, 4]
        np.testing.assert_allclose(np.array(out["data"]).reshape(3, 4), expected, rtol=1e-5, atol=1e-5)


def test_infer_several_datatypes_and_requested_outputs(multi: TestClient) -> None:
    body = {
        "inputs": [
            {"name": "ids", "shape": [2, 3], "datatype": "INT64", "data": [0, 1, 2, 9, 8, 7]},
            {"name": "mask", "shape": [2, 3], "datatype": "BOOL", "data": [True, False, True, False, False, True]},
            {"name": "half", "shape": [2, 2], "datatype": "FP16", "data": [0.5, 1.5, -2.0, 65504.0]},
        ],
        "outputs": [{"name": "emb"}, {"name": "half_out"}],
    }
    r = infer(multi, body, "multi")
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == {"emb", "half_out"}
    assert outs["emb"]["shape"] == [2, 3, 2] and outs["emb"]["data"][:2] == [0.0, 1.0]
    assert outs["half_out"]["datatype"] == "FP16" and outs["half_out"]["data"] == [0.5, 1.5, -2.0, 65504.0]


def test_v1_predict(linear: TestClient, multi: TestClient) -> None:
    _, w, b = models.linear_model()
    x = np.ones((2, 16), dtype=np.float32)
    r = linear.post("/predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["predictions"]), x @ w + b, rtol=1e-5)
    r = linear.post("/v1/models/linear:predict", json={"instances": x.tolist()})
    assert r.status_code == 200
    inst = [{"ids": [1, 2, 3], "mask": [True, True, False], "half": [1.0, 2.0]}]
    r = multi.post("/predict", json={"instances": inst})
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    assert pred["mask_f"] == [1.0, 1.0, 0.0] and pred["emb"][0] == [2.0, 3.0]


def test_large_request_is_decoded_off_the_event_loop(linear: TestClient) -> None:
    _, w, b = models.linear_model()
    x = np.random.default_rng(2).standard_normal((8192, 16)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": [8192, 16], "datatype": "FP32", "data": x.tolist()}]})
    assert len(body) > 1 << 20
    r = linear.post("/v2/models/linear/infer", content=body)
    assert r.status_code == 200, r.text[:200]
    out = np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(8192, 4)
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-4, atol=1e-4)


def test_openapi_document(linear: TestClient) -> None:
    doc = linear.get("/v2/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/v2/models/{model_name}/infer" in doc["paths"]
    assert linear.get("/openapi.json").json() == doc


def test_torch_exported_cnn_serves(model_root: Path) -> None:
    with client_for(model_root / "digits") as c:
        meta = c.get("/v2/models/digits").json()
        assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
        x = np.random.default_rng(0).random((5, 1, 8, 8)).tolist()
        r = infer(c, {"inputs": [{"name": "image", "shape": [5, 1, 8, 8], "datatype": "FP32", "data": x}]}, "digits")
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [5, 10]


def test_fixed_shape_model_is_not_batched(model_root: Path) -> None:
    with client_for(model_root / "fixed") as c:
        state = c.app.state.serving  # type: ignore[attr-defined]
        assert state.model.batchable is False and state.batcher.max_batch_size == 1
        ok = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [-1, 2, -3, 4]}]}
        r = infer(c, ok, "fixed")
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [0.0, 2.0, 0.0, 4.0]
        bad = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0] * 8}]}
        assert infer(c, bad, "fixed").status_code == 400
        assert c.post("/predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 400


def test_not_ready_before_lifespan_and_name_override(model_root: Path) -> None:
    app = create_app(Settings(model_dir=model_root / "linear", model_name="renamed"))
    c = TestClient(app)  # no context manager: the lifespan (load + warm-up) has not run
    r = c.get("/v2/health/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert c.post("/v2/models/renamed/infer", content=b"{}").status_code == 503
    assert c.get("/v2/health/live").status_code == 200
    with c:
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/v2/models/renamed").json()["name"] == "renamed"
        assert c.get("/v2/models/linear").status_code == 404


def test_digest_mismatch_refuses_to_load(tmp_path: Path) -> None:
    d = models.write_model_dir(models.linear_model()[0], tmp_path / "m", "m")
    report = json.loads((d / "report.json").read_text())
    report["digest"] = hashlib.sha256(b"something else").hexdigest()
    (d / "report.json").write_text(json.dumps(report))
    with pytest.raises(ModelError, match="does not match"):
        Model(Settings(model_dir=d))
    (d / "report.json").write_text(json.dumps({"name": "m"}))
    with pytest.raises(ModelError, match="digest"):
        Model(Settings(model_dir=d))
    (d / "report.json").unlink()
    with pytest.raises(ModelError, match="missing"):
        Model(Settings(model_dir=d))
    garbage = models.write_model_dir(b"not an onnx graph", tmp_path / "g", "g")  # digest right, graph wrong
    with pytest.raises(ModelError, match="cannot load"):
        Model(Settings(model_dir=garbage))


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELSTACK_SERVING_MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("MODELSTACK_SERVING_MODEL_DIR", str(tmp_path))
    s = Settings()
    assert s.max_batch_size == 32 and s.model_dir == tmp_path
    assert Settings(max_batch_size=4).max_batch_size == 4  # explicit (CLI) values win
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} needs a description"


def test_request_series_exist_at_zero_before_the_first_request(model_root: Path) -> None:
    """rate() misses the increase that creates a series: 200 and 5xx counters must exist from the start."""
    with client_for(model_root / "linear") as fresh:
        text = fresh.get("/metrics").text
    for endpoint in ("infer", "predict"):
        for code in ("200", "500", "503"):
            line = f'modelstack_requests_total{{code="{code}",endpoint="{endpoint}",model="linear"}} 0.0'
            assert line in text, line


def test_the_fault_setting_fails_that_share_of_inference_requests_and_counts_them(model_root: Path) -> None:
    """fault_error_ratio (tests only) is how e2e makes a canary misbehave: 500s on inference, never on probes."""
    body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
    with client_for(model_root / "linear", fault_error_ratio=0.5) as c:
        codes = [infer(c, body).status_code for _ in range(400)]
        assert all(c.get("/v2/health/ready").status_code == 200 for _ in range(20))
        failed = codes.count(500)
        assert set(codes) == {200, 500} and 140 < failed < 260, failed
        metrics = c.get("/metrics").text
        assert f'modelstack_requests_total{{code="500",endpoint="infer",model="linear"}} {float(failed)}' in metrics
        answer = next(r for r in (infer(c, body) for _ in range(50)) if r.status_code == 500)
        assert "injected fault" in answer.json()["error"]
    with client_for(model_root / "linear") as c:
        assert {infer(c, body).status_code for _ in range(50)} == {200}
