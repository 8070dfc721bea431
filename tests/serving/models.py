"""Tiny real models for the server tests, built with torch or onnx.helper, plus their report.json."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def write_model_dir(model: onnx.ModelProto | bytes, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    report = {"name": name, "digest": hashlib.sha256(data).hexdigest()}
    (out / "report.json").write_text(json.dumps(report))
    return out


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    return model


def linear_model(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """y = x @ W + b, x [N, 16] FP32 -> y [N, 4]: exact results to compare against numpy."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return model, w, b


def multi_model() -> onnx.ModelProto:
    """Three inputs of different datatypes (INT64 ids into an embedding table, BOOL mask, FP16), three outputs."""
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["half"], ["half_out"]),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 3]),
            helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 3, 2]),
            helper.make_tensor_value_info("mask_f", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("half_out", TensorProto.FLOAT16, ["N", 2]),
        ],
        [numpy_helper.from_array(table, "table")],
    )


def strings_model() -> onnx.ModelProto:
    """A string tensor in and out (BYTES over the protocol): text [N, 2] -> same [N, 2]."""
    return _model(
        [helper.make_node("Identity", ["text"], ["same"])],
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N", 2])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["N", 2])],
    )


def fixed_model() -> onnx.ModelProto:
    """No free batch dimension: x [1, 4] -> y [1, 4]; the server must not batch it."""
    return _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )


def heavy_model(width: int = 512, layers: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Compute-bound MLP: x [N, width] through ``layers`` MatMul+Tanh sharing one weight; out [N, width]."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [prev, "W"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [numpy_helper.from_array(w, "W")],
    )


def digits_cnn_onnx() -> bytes:
    """A digits-like CNN (input [N, 1, 8, 8] -> 10 logits) exported from torch with a dynamic batch axis."""
    import io

    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc(x.flatten(1))

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and still the one without onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Net().eval(),
            (torch.zeros(1, 1, 8, 8),),
            buf,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    return buf.getvalue()


def unrunnable_model() -> onnx.ModelProto:
    """Loads fine but fails on any batch of 1 (reshapes 3 values into rows of 2): warm-up must catch it."""
    shape = numpy_helper.from_array(np.array([-1, 2], dtype=np.int64), "shape")
    return _model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 2])],
        [shape],
    )
