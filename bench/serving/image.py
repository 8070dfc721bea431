"""A large-tensor model for the request forms: what a user sends an image embedder (float32 [N,3,224,224],
150,528 values a row: about 1.9 MB of JSON, 602 KB of raw bytes) and gets back (a 512-wide embedding).
Synthetic weights: the model is cheap on purpose (patchify, pool, project), so encoding the tensor, not
the model, is what the forms differ in."""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

from bench.serving.forms import RequestForm
from bench.serving.forms_compare import compare_forms
from bench.serving.measure import Settings
from bench.serving.mlp import write_dir

NAME = "image"
TITLE = "large tensors (synthetic image embedder, float32 [N,3,224,224] -> [N,512])"


def image_embedder() -> ModelProto:
    """x [N,3,224,224] -> Conv 16x16 stride 16 (3 -> 64) -> GlobalAveragePool -> Flatten -> MatMul -> y [N,512]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((64, 3, 16, 16)) / 28).astype(np.float32), "Wc"),
        numpy_helper.from_array((rng.standard_normal((64, 512)) / 8).astype(np.float32), "Wp"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "Wc"], ["c"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "Wp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        NAME,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 512])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run_image(forms: list[RequestForm], run: Settings) -> None:
    model_dir = write_dir(image_embedder(), run.root / NAME, NAME)
    x = np.random.default_rng(2).random((1, 3, 224, 224), dtype=np.float32)
    raw = x.view(np.uint8)
    raw[raw == ord("{")] -= 1  # ghz parses even a binary message as a Go template: no "{{" (1 ulp or so)
    inputs = {"x": x}
    print(f"\n# {TITLE}")
    for form in forms:
        print(f"{form.title} request body {len(form.encode(NAME, inputs).body)} bytes")
    compare_forms(NAME, model_dir, NAME, inputs, forms, run)
