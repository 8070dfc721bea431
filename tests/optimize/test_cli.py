"""`python -m optimize build`: exit codes and one-line reasons, via a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.optimize.conftest import fast_recipe, leftovers

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "optimize", "build", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300, check=False)  # fmt: skip


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_build_succeeds_with_a_recipe_file(mlp, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(fast_recipe().to_yaml())
    out = tmp_path / "out"
    proc = cli("--model", str(mlp["onnx"]), "--recipe", str(recipe), "--out", str(out),
               "--validation", str(mlp["validation"]), "--name", "tiny")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    report = json.loads((out / "report.json").read_text())
    assert summary["digest"] == report["digest"] and report["name"] == "tiny"
    # No progress display when stderr is not a TTY: only how each output was judged, and why.
    assert proc.stderr.strip() == "task: logits: classification (inferred: the validation data has labels)"
    assert 0 < report["peak_rss_bytes"] < 2 * 1024**3  # a build process of its own: its peak is the build's


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        (["--model", "MISSING.pt", "--recipe", "int8-dynamic"], 2, "does not exist"),
        (["--model", "{junk}", "--recipe", "int8-dynamic"], 2, "unknown format"),
        (["--model", "{ts}", "--recipe", "int9"], 2, "neither a preset"),
        (["--model", "{ts}", "--recipe", "{extra_recipe}"], 2, "prune.speed: unknown field"),
        (["--model", "{ts}", "--recipe", "int8-static", "--validation", "{val}"], 2, "needs a calibration set"),
        (["--model", "{ts}", "--recipe", "{gate_recipe}", "--validation", "{val}"], 3, "accuracy gate failed"),
    ],
)
def test_failures_exit_non_zero_with_one_line(mlp, tmp_path, args, code, match):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")
    extra = tmp_path / "extra.yaml"
    extra.write_text("prune:\n  speed: 11\n")
    gate = tmp_path / "gate.yaml"
    gate.write_text("prune: {method: global_unstructured, amount: 0.97}\nquantize: {mode: none}\n")
    values = {
        "junk": junk,
        "ts": mlp["torchscript"],
        "val": mlp["validation"],
        "extra_recipe": extra,
        "gate_recipe": gate,
    }
    out = tmp_path / "out"
    proc = cli(*[a.format(**values) for a in args], "--out", str(out))
    assert proc.returncode == code, proc.stderr
    assert match in _one_line_error(proc)
    assert leftovers(tmp_path, "out") == []


def test_progress_display_can_be_forced_on(mlp, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(fast_recipe().to_json())
    proc = cli("--model", str(mlp["onnx"]), "--recipe", str(recipe), "--out", str(tmp_path / "out"),
               "--validation", str(mlp["validation"]), "--progress", "on")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for stage in ("load", "quantize", "graph", "validate", "benchmark", "report"):
        assert f"done {stage}" in proc.stderr


def test_a_library_failure_is_one_line_naming_the_stage_and_the_op(tmp_path):
    """ONNX Runtime cannot load a model with an op it does not know: that reaches the user as one line
    naming the stage and the op (not ORT's status code, C++ location or a Python traceback), and
    --out is not created."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Scramble", ["x"], ["y"], domain="com.acme", name="scramble_0")],
                              "custom", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    model.ir_version = 10  # what this onnxruntime reads
    onnx.checker.check_model(model)  # valid ONNX: only the runtime lacks the op
    onnx.save(model, tmp_path / "custom.onnx")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(fast_recipe(export={"input_shapes": {"x": [4]}}).to_yaml())
    proc = cli("--model", str(tmp_path / "custom.onnx"), "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    line = _one_line_error(proc)
    assert line.startswith("error: load stage failed: ") and "com.acme:Scramble" in line, line
    assert "[ONNXRuntimeError]" not in line and ".cc:" not in line and "Traceback" not in proc.stderr
    assert leftovers(tmp_path, "out") == []


def test_peak_memory_is_the_build_process_own_not_its_parents():
    # The parent touches 600 MiB, then starts the child (as a test runner or the provider starts a
    # build): Linux keeps ru_maxrss across exec, so it would carry the parent's peak into the report.
    script = (
        "import subprocess, sys\n"
        "ballast = bytearray(600 * 2**20)\n"
        "child = 'from optimize import report; print(report.peak_rss_bytes())'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True,"
        " check=True).stdout)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120, check=True)  # fmt: skip
    child_peak = int(proc.stdout.strip())
    assert 0 < child_peak < 400 * 2**20
