"""The run on a real example: examples/<name> trained by ``python -m examples.<name>.train``, compressed by
``python -m optimize build --recipe int8-dynamic`` (built once into the git-ignored ``.cache/serving-bench/``),
served as it is; each request is one real row of the example's validation set."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.serving.batching import batching
from bench.serving.forms import RequestForm
from bench.serving.forms_compare import compare_forms
from bench.serving.measure import Settings
from bench.serving.mlserver import compare_example
from bench.serving.overhead import overhead
from bench.serving.servers import REPO

EXAMPLES = {
    "digits": "overhead-bound (small CNN, float32 [N,1,8,8])",
    "text": "compute-bound (4-layer encoder, int64 token ids [N,64])",
}
MLSERVER_TARGET = {"digits": 2.0, "text": 1.5}  # our req/s over MLServer's better configuration
CACHE = REPO / ".cache" / "serving-bench"  # git-ignored


def example_artifact(name: str, recipe: str = "int8-dynamic") -> Path:
    """DIR with model.onnx + report.json for the example, built once per (model.pt, recipe, optimize code)."""
    build = REPO / "examples" / name / "build"
    if not (build / "model.pt").is_file():
        print(f"training examples/{name} ...", flush=True)
        subprocess.run([sys.executable, "-m", f"examples.{name}.train", "--out", str(build)], cwd=REPO, check=True)
    code = b"".join(p.read_bytes() for p in sorted((REPO / "optimize").glob("*.py")))  # rebuild on pipeline changes
    key = hashlib.sha256((build / "model.pt").read_bytes() + recipe.encode() + code).hexdigest()[:16]
    out = CACHE / f"{name}-{recipe}-{key}"
    if not (out / "report.json").is_file():
        print(f"building {out.relative_to(REPO)} ...", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "optimize", "build", "--model", str(build / "model.pt"), "--recipe", recipe]
        cmd += ["--out", str(out), "--validation", str(build / "validation.npz")]
        cmd += ["--calibration", str(build / "calibration.npz")]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, timeout=900)
    return out


def example_rows(model_dir: Path, rows: int) -> tuple[str, np.ndarray]:
    """(input name, the first ``rows`` rows of the example's validation set, in report.json's dtype/shape)."""
    report = json.loads((model_dir / "report.json").read_text())
    (spec,) = report["inputs"]
    name = model_dir.name.split("-")[0]
    data = np.load(REPO / "examples" / name / "build" / "validation.npz", allow_pickle=False)
    x = data[spec["name"]] if spec["name"] in data.files else data["x"]
    x = np.ascontiguousarray(x[:rows], dtype=np.dtype(spec["dtype"]))
    assert list(x.shape[1:]) == spec["shape"][1:], (x.shape, spec["shape"])
    return spec["name"], x


def run_example(name: str, forms: list[RequestForm], only: str | None, run: Settings) -> None:
    """Overhead at batch 1; on text, batching on vs off; with MLServer, req/s and latency against it."""
    model_dir = example_artifact(name)
    report = json.loads((model_dir / "report.json").read_text())
    model = report["name"]
    input_name, x = example_rows(model_dir, 1)
    inputs = {input_name: x}
    print(f"\n# example {name}: {EXAMPLES[name]}; {model_dir.relative_to(REPO)}")
    print(f"input {input_name} {report['inputs'][0]['dtype']} {list(x.shape)}")
    for form in forms:
        print(f"{form.title} request body {len(form.encode(model, inputs).body)} bytes")

    if only in (None, "overhead"):
        for form in forms:
            overhead(name, model_dir, model, inputs, form, run)
    if name == "text" and only in (None, "batching"):
        for form in forms:
            batching(name, model_dir, model, inputs, form, run)
    if only in (None, "forms"):
        compare_forms(name, model_dir, model, inputs, forms, run)
    if run.mlserver and only in (None, "mlserver"):
        latency_requests = max(50, run.requests // (4 if name == "digits" else 20))
        for form in forms:
            compare_example(
                name, run.mlserver, model_dir, model, inputs, form, run, latency_requests, MLSERVER_TARGET[name]
            )
