"""Transformer fusions on a real (tiny) BERT-style encoder exported by the dynamo exporter: what fuses,
that the fused graph computes the same, and that int8 quantization then reaches the attention."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from optimize import data as datasets
from optimize import sources
from optimize.export import export
from optimize.quantize import quantize
from optimize.recipe import ExportSpec, QuantizeSpec
from optimize.runtime import ort_runner, ort_session, torch_runner

FACTORY = "tests.optimize.models:build_tiny_encoder"


def tokens(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 32, size=(rows, 16)).astype(np.int64)


def contrib(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from tests.optimize.models import build_tiny_encoder

    root = tmp_path_factory.mktemp("encoder")
    torch.save(build_tiny_encoder().state_dict(), root / "state.pt")
    src = sources.load(root / "state.pt", FACTORY)
    paths = {}
    for name, fuse in (("plain", False), ("fused", True)):
        model = export(src, {"x": tokens(2, 0)}, ExportSpec(), root / name, fuse=fuse)
        paths[name] = root / f"{name}.onnx"
        onnx.save_model(model, str(paths[name]))
    return src, paths


def test_attention_layernorm_and_gelu_fuse_into_ort_ops(encoder):
    _, paths = encoder
    fused = onnx.load(str(paths["fused"]))
    ops = {n.op_type for n in fused.graph.node}
    assert contrib(fused) == {"Attention": 2, "BiasGelu": 2}
    # SkipLayerNormalization is turned back into Add + LayerNormalization (faster on ORT's CPU kernels)
    assert Counter(n.op_type for n in fused.graph.node)["LayerNormalization"] == 4
    assert not ops & {"Softmax", "Erf", "Transpose", "Shape", "Slice"}, ops  # the unfused attention is gone
    assert contrib(onnx.load(str(paths["plain"]))) == {}
    assert fused.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch still dynamic


def test_fused_graph_computes_what_torch_does(encoder):
    src, paths = encoder
    x = tokens(5, 1)  # a batch size never seen at export
    expected = torch_runner(src.runner())(x)
    for name in ("plain", "fused"):
        got = ort_runner(ort_session(paths[name], 1), ["x"])(x)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=name)


def test_fusion_is_deterministic(encoder, tmp_path):
    src, paths = encoder
    again = export(src, {"x": tokens(2, 0)}, ExportSpec(), tmp_path, fuse=True)
    assert again.SerializeToString() == onnx.load(str(paths["fused"])).SerializeToString()


@pytest.mark.parametrize("mode", ["dynamic_int8", "static_int8", "fp16"])
def test_quantizing_the_fused_graph_is_as_accurate_as_the_plain_one(encoder, tmp_path, mode):
    _, paths = encoder
    calibration = datasets.Dataset({"x": tokens(64, 2)}, None)
    x = tokens(64, 3)
    ref = ort_runner(ort_session(paths["plain"], 1), ["x"])(x)
    error = {}
    for name in ("plain", "fused"):
        out = tmp_path / f"{name}-int8.onnx"
        quantize(paths[name], out, QuantizeSpec(mode=mode), calibration)
        error[name] = float(np.abs(ort_runner(ort_session(out, 1), ["x"])(x) - ref).mean())
        if name == "fused" and mode == "dynamic_int8":
            assert contrib(onnx.load(str(out)))["QAttention"] == 2  # the Q/K/V projections in int8 too
    assert 0 < error["fused"] < 1.5 * error["plain"]


def test_a_cnn_has_nothing_to_fuse(cnn, tmp_path):
    src = sources.load(cnn["torchscript"])
    x = np.load(cnn["validation"])["x"]
    fused = export(src, {"x": x[:2]}, ExportSpec(), tmp_path / "f", fuse=True)
    assert contrib(fused) == {}
    path = tmp_path / "cnn.onnx"
    onnx.save_model(fused, str(path))
    np.testing.assert_allclose(
        ort_runner(ort_session(path, 1), ["x"])(x[:9]), torch_runner(src.runner())(x[:9]), atol=1e-4
    )


def test_opset_23_attention_is_left_alone_and_runs_in_float(encoder, tmp_path):
    """ONNX's own Attention (opset 23) is one op already, and ORT's quantizer would mistake it for its
    contrib Attention: no fusion around it, and int8 leaves it in float."""
    src, _ = encoder
    model = export(src, {"x": tokens(2, 0)}, ExportSpec(opset=23), tmp_path / "e", fuse=True)
    assert Counter((n.domain, n.op_type) for n in model.graph.node)[("", "Attention")] == 2
    assert contrib(model) == {}
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save_model(model, str(fp32))
    quantize(fp32, int8, QuantizeSpec(mode="dynamic_int8"))
    quantized = onnx.load(str(int8))
    assert "QAttention" not in contrib(quantized)
    assert any(n.op_type == "DynamicQuantizeLinear" for n in quantized.graph.node)
    x = tokens(16, 4)
    ref = ort_runner(ort_session(fp32, 1), ["x"])(x)
    got = ort_runner(ort_session(int8, 1), ["x"])(x)
    assert np.abs(got - ref).mean() < 0.5 * np.abs(ref).mean()


def test_onnx_runtime_does_not_fuse_skip_layer_norm_back(encoder, tmp_path):
    """The graph stage (ORT 'extended', saved) and ORT's load-time passes ('all') keep Add + LayerNorm."""
    import onnxruntime as ort

    from optimize.graph import optimize

    _, paths = encoder
    quantized, optimized, loaded = tmp_path / "q.onnx", tmp_path / "opt.onnx", tmp_path / "loaded.onnx"
    quantize(paths["fused"], quantized, QuantizeSpec(mode="dynamic_int8"))
    optimize(quantized, optimized, "extended")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(loaded)
    ort.InferenceSession(str(optimized), opts, providers=["CPUExecutionProvider"])
    for path in (optimized, loaded):
        ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
        assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 4, (path.name, ops)
        assert ops["QAttention"] == 2


def test_only_a_pure_padding_bias_becomes_a_mask_index():
    """QAttention keeps `mask_index` but has no `attention_bias`: a padding mask is moved, a causal one not."""
    from optimize.fusion import _is_padding_bias

    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    padding = mask == 0
    bias = np.where(padding[:, None, None, :], np.finfo(np.float32).min, 0.0).astype(np.float32)
    assert _is_padding_bias(np.broadcast_to(bias, (2, 1, 4, 4)), padding)
    causal = np.triu(np.full((4, 4), -1e9, np.float32), k=1)[None, None] + bias
    assert not _is_padding_bias(causal, padding)
    assert not _is_padding_bias(np.zeros((2, 1, 4, 3), np.float32), padding)  # other key length
