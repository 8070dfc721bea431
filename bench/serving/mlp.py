"""The default run, on two synthetic MLPs: a small one (overhead-bound, for latency at batch 1) and a heavy
one (compute-bound, for batching and throughput)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.serving.batching import batching
from bench.serving.forms import RequestForm
from bench.serving.measure import Settings
from bench.serving.mlserver import compare_mlps
from bench.serving.overhead import overhead


def mlp(in_width: int, hidden: int, layers: int, out_width: int) -> onnx.ModelProto:
    """x [N, in_width] -> ``layers`` MatMul+Relu of width ``hidden`` (one shared weight) -> y [N, out_width]."""
    rng = np.random.default_rng(0)

    def weight(name: str, rows: int, cols: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32), name)

    inits = [weight("Win", in_width, hidden), weight("W", hidden, hidden), weight("Wout", hidden, out_width)]
    nodes, prev = [helper.make_node("MatMul", ["x", "Win"], ["h"])], "h"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [prev, "W"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("MatMul", [prev, "Wout"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write_dir(model: onnx.ModelProto, out: Path, name: str) -> Path:
    out.mkdir(parents=True)
    data = model.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    (out / "report.json").write_text(json.dumps({"name": name, "digest": hashlib.sha256(data).hexdigest()}))
    return out


def run_mlps(forms: list[RequestForm], only: str | None, run: Settings) -> None:
    small = write_dir(mlp(32, 64, 1, 8), run.root / "small", "small")
    heavy = write_dir(mlp(64, 1024, 8, 16), run.root / "heavy", "heavy")
    inputs = {  # one row each, the same every run
        "small": {"x": np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32)},
        "heavy": {"x": np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)},
    }
    if only in (None, "overhead"):
        for form in forms:
            overhead("MLP 32->64->8", small, "small", inputs["small"], form, run)
    if only in (None, "batching"):
        for form in forms:
            batching("MLP 64->1024x8->16", heavy, "heavy", inputs["heavy"], form, run)
    if run.mlserver and only in (None, "mlserver"):
        for form in forms:
            compare_mlps(run.mlserver, small, heavy, inputs, form, run)
