"""Build context assembly and the Dockerfile's promises (its locks: tests/test_locks.py)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.context import ContextError, assemble
from tests.serving import models
from tests.serving.server import ServerProcess

SERVING = Path(__file__).resolve().parents[2] / "serving"


def test_assemble_lays_out_a_build_context_that_serves(model_root: Path, tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    (wheelhouse / "demo-1.0-py3-none-any.whl").write_bytes(b"PK")
    out = assemble(model_root / "linear", tmp_path / "ctx", wheelhouse=wheelhouse)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"Dockerfile", "requirements.txt", "requirements-gpu.txt"} <= names
    assert not any(n.endswith(".in") for n in names)  # the locks, not their inputs
    assert {"serving/__main__.py", "serving/app.py", "model/model.onnx", "model/report.json"} <= names
    assert "wheels/demo-1.0-py3-none-any.whl" in names
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert not any("__pycache__" in n for n in names)
    # Assembling again into the same directory replaces it; a foreign non-empty directory is refused.
    assert assemble(model_root / "linear", out) == out
    assert not (out / "wheels" / "demo-1.0-py3-none-any.whl").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ContextError, match="not empty"):
        assemble(model_root / "linear", foreign)

    # The copied package and model run as they would in the image (PYTHONPATH=/app, model dir from env).
    server = ServerProcess(out / "model", tmp_path / "ctx.log", cwd=out, model_name="ctx")
    try:
        server.wait_ready()
        x = np.ones((1, 16), dtype=np.float32)
        body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = httpx.post(f"{server.url}/v2/models/ctx/infer", json=body, timeout=10)
        assert r.status_code == 200, r.text
        assert f"serving {out / 'serving'}" in server.logs()  # the copy ran, not the checkout
    finally:
        assert server.stop() == 0


def test_assemble_refuses_a_tampered_model(tmp_path: Path) -> None:
    d = models.write_model_dir(models.fixed_model(), tmp_path / "m", "m")
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ContextError, match="does not match"):
        assemble(d, tmp_path / "ctx")
    with pytest.raises(ContextError, match="missing"):
        assemble(tmp_path / "nowhere", tmp_path / "ctx")


def test_dockerfile_promises() -> None:
    text = (SERVING / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^ARG CUDA_BASE_IMAGE=nvidia/cuda:\S+-runtime-\S+$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)  # numeric: runAsNonRoot can verify it
    assert "--only-binary=:all: --require-hashes --no-deps" in text and "--no-index --find-links /wheels" in text
    runtime = text[text.index("AS runtime") :]
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", runtime)
    assert "pip uninstall -y pip" in text
    assert 'ENTRYPOINT ["python", "-m", "serving"]' in text

