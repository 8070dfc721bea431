"""Stages on their own: pruning, export, each quantization mode, fp16 on ORT CPU."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch

from optimize import data as datasets
from optimize import prune, sources
from optimize.errors import OptimizeError
from optimize.export import export
from optimize.quantize import quantize
from optimize.recipe import ExportSpec, PruneSpec, QuantizeSpec
from optimize.runtime import ort_runner, ort_session, torch_runner


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program", "state_dict"])
def test_global_unstructured_prune_hits_the_amount(mlp, fmt):
    src = sources.load(mlp[fmt], "tests.optimize.models:build_mlp")
    before = prune.sparsity(src)["sparsity"]
    stats = prune.apply(src, PruneSpec(method="global_unstructured", amount=0.5))
    assert before == 0.0
    assert stats["pruned_tensors"] == 3
    assert stats["sparsity"] == pytest.approx(0.5, abs=0.01)
    # The zeros are in the module that runs, not only in a copy.
    weights = prune.prunable(src)
    assert sum(int((w == 0).sum()) for w in weights.values()) > 0


def test_pruned_weights_reach_the_onnx_model(mlp, tmp_path):
    src = sources.load(mlp["exported_program"])
    prune.apply(src, PruneSpec(method="global_unstructured", amount=0.5))
    x = np.load(mlp["validation"])["x"][:2]
    model = export(src, {"x": x}, ExportSpec(), tmp_path)
    mats = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if len(i.dims) == 2]
    zeros = sum(int((m == 0).sum()) for m in mats) / sum(m.size for m in mats)
    assert zeros == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program", "state_dict"])
def test_export_has_dynamic_batch_and_matches_torch(mlp, fmt, tmp_path):
    src = sources.load(mlp[fmt], "tests.optimize.models:build_mlp")
    x = np.load(mlp["validation"])["x"][:2]
    model = export(src, {"x": x}, ExportSpec(), tmp_path)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert [o.name for o in model.graph.output] == ["output"]
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path))
    run = ort_runner(ort_session(path, 1), ["x"])
    x7 = np.load(mlp["validation"])["x"][:7]  # a batch size never seen at export
    np.testing.assert_allclose(run(x7), torch_runner(src.runner())(x7), atol=1e-4)


def test_torchscript_export_failure_points_to_pt2(tmp_path):
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    x = torch.randn(2, 8, 16)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, x, check_trace=False).save(str(tmp_path / "enc.pt"))
    src = sources.load(tmp_path / "enc.pt")
    with pytest.raises(OptimizeError, match=r"torch\.export\.save as a \.pt2"):
        export(src, {src.input_names[0]: x.numpy()}, ExportSpec(), tmp_path)


@pytest.fixture(scope="module")
def fp32_onnx(mlp, tmp_path_factory):
    src = sources.load(mlp["torchscript"])
    x = np.load(mlp["validation"])["x"][:2]
    path = tmp_path_factory.mktemp("fp32") / "fp32.onnx"
    onnx.save_model(export(src, {"x": x}, ExportSpec(), path.parent), str(path))
    return path


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _close_to_fp32(path, fp32, mlp, rel):
    x = np.load(mlp["validation"])["x"][:64]
    ref = ort_runner(ort_session(fp32, 1), ["x"])(x)
    got = ort_runner(ort_session(path, 1), ["x"])(x)
    assert got.dtype == np.float32
    # Static ranges come from a small calibration set, so outliers may clip: compare on average.
    assert np.abs(got - ref).mean() < rel * np.abs(ref).mean()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_dynamic_int8(fp32_onnx, mlp, tmp_path):
    out = tmp_path / "q.onnx"
    quantize(fp32_onnx, out, QuantizeSpec(mode="dynamic_int8"))
    assert "DynamicQuantizeLinear" in _ops(out)
    assert out.stat().st_size < 0.5 * fp32_onnx.stat().st_size
    _close_to_fp32(out, fp32_onnx, mlp, rel=0.1)


def test_static_int8_writes_qdq(fp32_onnx, mlp, tmp_path):
    cal = datasets.load(mlp["calibration"], ["x"], "calibration")
    out = tmp_path / "s.onnx"
    quantize(fp32_onnx, out, QuantizeSpec(mode="static_int8", per_channel=True), cal)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)
    _close_to_fp32(out, fp32_onnx, mlp, rel=0.1)


def test_static_int8_refuses_empty_calibration(fp32_onnx, tmp_path):
    empty = datasets.Dataset({"x": np.zeros((0, 16), np.float32)}, None)
    with pytest.raises(OptimizeError, match="non-empty calibration"):
        quantize(fp32_onnx, tmp_path / "s.onnx", QuantizeSpec(mode="static_int8"), empty)


def test_fp16_is_valid_and_runs_on_ort_cpu(fp32_onnx, mlp, tmp_path):
    out = tmp_path / "h.onnx"
    quantize(fp32_onnx, out, QuantizeSpec(mode="fp16"))
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    weights = [i for i in model.graph.initializer if len(i.dims) == 2]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io kept fp32
    _close_to_fp32(out, fp32_onnx, mlp, rel=0.01)


def test_the_batch_axis_is_the_one_that_follows_the_rows():
    from optimize.validate import batch_axes

    example = {"x": np.zeros((2, 12, 8), np.float32)}
    assert batch_axes(lambda x: [np.zeros((len(x), 5))], example) == [0]
    assert batch_axes(lambda x: [np.zeros((12, len(x), 5))], example) == [1]  # time-major
    with pytest.raises(OptimizeError, match="cannot tell the batch axis"):
        batch_axes(lambda x: [np.zeros((5,))], example)  # reduces the batch away
    with pytest.raises(OptimizeError, match="changes with the batch size"):
        batch_axes(lambda x: [np.zeros((len(x),) * len(x))], example)


def test_each_output_has_its_own_batch_axis_and_a_bad_one_is_named():
    from optimize.validate import batch_axes

    example = {"x": np.zeros((2, 12, 8), np.float32)}
    assert batch_axes(lambda x: [np.zeros((len(x), 5)), np.zeros((12, len(x), 3))], example) == [0, 1]
    with pytest.raises(OptimizeError, match=r"batch axis of output 1 \(of 2\)"):
        batch_axes(lambda x: [np.zeros((len(x), 5)), np.zeros((7,))], example)
