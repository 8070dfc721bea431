"""Quantization with onnxruntime.quantization, and fp16 conversion.

File in, file out, as ORT's own API is. Dynamic int8 quantizes weights ahead
of time and activations per batch; static int8 calibrates activation ranges
on a calibration set and writes QDQ pairs that ORT fuses into integer kernels;
fp16 halves weights and activations (worth it on GPUs; ORT CPU runs it via
casts, so on CPU it is a size win, not a speed win).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from optimize.data import Dataset
from optimize.errors import OptimizeError
from optimize.recipe import QuantizeSpec
from optimize.sources import _first

CALIBRATION_BATCH = 16
SMALL_INITIALIZER = 1024  # elements: kept as values for shape inference


def quantize(src: Path, dst: Path, spec: QuantizeSpec, calibration: Dataset | None = None) -> None:
    if spec.reduce_range == "auto":  # callers other than the pipeline: decide for this machine
        from optimize.hardware import plan_int8

        spec = spec.model_copy(update={"reduce_range": plan_int8(spec).reduce_range})
    # ORT's quantizer logs and prints per-node chatter; keep the CLI's stderr readable.
    # (it also warns through the root logger, e.g. "consider pre-processing").
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if spec.mode == "dynamic_int8":
                _dynamic(*_prepare(src, dst, spec), dst, spec)
            elif spec.mode == "static_int8":
                if calibration is None or len(calibration) == 0:
                    raise OptimizeError("quantize.mode static_int8 needs a non-empty calibration set (--calibration)")
                _static(*_prepare(src, dst, spec), dst, spec, calibration)
            elif spec.mode == "fp16":
                _fp16(src, dst)
            else:
                raise OptimizeError(f"quantize.mode '{spec.mode}' is not a quantization")
    except OptimizeError:
        raise
    except Exception as exc:
        raise OptimizeError(f"{spec.mode} quantization failed: {_first(exc)}") from None
    finally:
        root.setLevel(level)


def _prepare(src: Path, dst: Path, spec: QuantizeSpec) -> tuple[Path, list[str]]:
    """(the model file to quantize, the op types to quantize in it), from one read of ``src``.

    The quantizer types every tensor with ONNX shape inference, which knows no com.microsoft op: after
    the transformer fusions, the outputs of Attention or BiasGelu would have no type and quantization
    stops. So a graph with contrib ops gets their output types written in first (next to ``dst``).
    And the quantizer matches op types without their domain: it would turn ONNX's own Attention
    (opset 23) into its contrib QAttention, which takes other inputs, so only the contrib Attention
    is quantized."""
    import onnx

    from optimize.fusion import has_onnx_attention

    model = onnx.load(str(src))
    op_types = list(spec.op_types)
    if has_onnx_attention(model):
        op_types = [op for op in op_types if op != "Attention"]
    if not any(node.domain == "com.microsoft" for node in model.graph.node):
        return src, op_types
    annotated = dst.with_name(f"{dst.stem}.typed.onnx")
    onnx.save_model(_type_contrib_outputs(model), str(annotated))
    return annotated, op_types


def _type_contrib_outputs(model: Any) -> Any:
    """The model with an element type (no shape) recorded for every contrib op output: that of the op's
    first input, which holds for the fused ops (Attention, BiasGelu, FastGelu, SkipLayerNormalization).

    Type only, not ONNX Runtime's symbolic shape inference: that gives up on graphs it cannot follow
    (it fails on the Expand that Hugging Face encoders build their attention mask with), while the
    quantizer needs nothing but the types. Repeated because one fused op's output may feed the next."""
    import onnx
    from onnx import helper

    contrib = [n for n in model.graph.node if n.domain == "com.microsoft"]
    skeleton = _without_weights(model)
    for _ in range(len(contrib)):
        graph = onnx.shape_inference.infer_shapes(skeleton).graph
        known = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
        known.update({i.name: i.data_type for i in graph.initializer})
        added = [
            helper.make_tensor_value_info(out, known[node.input[0]], None)
            for node in contrib
            if known.get(node.input[0])
            for out in node.output
            if out and not known.get(out)
        ]
        if not added:
            break
        model.graph.value_info.extend(added)
        skeleton.graph.value_info.extend(added)
    return model


def _without_weights(model: Any) -> Any:
    """A copy for shape inference: large initializers become typed graph inputs (inference needs their
    type and shape, not their bytes; serializing a 90 MB encoder for every pass was most of the stage).
    Small ones stay: shapes for Reshape and friends are read from their values."""
    import onnx
    from onnx import helper

    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    graph = skeleton.graph
    large = [i for i in graph.initializer if math.prod(i.dims) > SMALL_INITIALIZER]
    graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in large)
    kept = [i for i in graph.initializer if math.prod(i.dims) <= SMALL_INITIALIZER]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return skeleton


def _dynamic(src: Path, op_types: list[str], dst: Path, spec: QuantizeSpec) -> None:
    """Dynamic int8; convolutions get int8 weights only (see _int8_conv_weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=spec.per_channel,
        reduce_range=spec.reduce_range,
        op_types_to_quantize=[op for op in op_types if op != "Conv"],
        nodes_to_exclude=_excluded(spec),
    )
    if "Conv" in op_types:
        _int8_conv_weights(dst, set(spec.exclude_nodes))


def _int8_conv_weights(path: Path, excluded: set[str]) -> None:
    """Store each Conv's weights as int8 (symmetric, one scale per output channel) behind a
    DequantizeLinear, so the convolution itself runs in float.

    Dynamic int8 would make it a ConvInteger, which ORT's CPU provider runs without its optimized
    convolution kernels: on the CRNN benchmark's CNN it was 5-7x slower than the float Conv it
    replaced. This keeps the int8 size at about float speed (ORT keeps DequantizeLinear out of
    constant folding, so the artifact stays small)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    if next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0) < 13:
        return  # per-channel DequantizeLinear (axis) needs opset 13
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    added = []
    for node in graph.node:
        name = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else None
        tensor = weights.get(name or "")
        if name is None or tensor is None or node.name in excluded or consumers[name] != 1:
            continue
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(tensor)
        scale = np.maximum(np.abs(w).reshape(len(w), -1).max(axis=1), 1e-12) / 127.0
        q = np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        graph.initializer.remove(tensor)
        zero = np.zeros(len(w), np.int8)
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                                  numpy_helper.from_array(zero, f"{name}_zero_point")])  # fmt: skip
        added.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                                      [name], name=f"{node.name or name}_weight_dequantize", axis=0))  # fmt: skip
    if added:
        nodes = [*added, *graph.node]  # the dequantizations read initializers only: first is in order
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save_model(model, str(path))


def _excluded(spec: QuantizeSpec) -> list[str]:
    """The node names to keep in float, also as the quantizer renames them: dynamic int8 first rewrites a
    Gemm as MatMul + Add and names the MatMul after it."""
    return [*spec.exclude_nodes, *(f"{name}_MatMul" for name in spec.exclude_nodes)]


class _Reader:
    """A CalibrationDataReader over fixed-order batches (deterministic ranges)."""

    def __init__(self, data: Dataset, samples: int, dtypes: dict[str, Any]) -> None:
        n = min(len(data), samples)
        self._batches = [
            {
                k: np.ascontiguousarray(v.astype(dtypes.get(k, v.dtype), copy=False))
                for k, v in data.rows(i, i + CALIBRATION_BATCH).items()
            }
            for i in range(0, n, CALIBRATION_BATCH)
        ]
        self._it = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def _static(src: Path, op_types: list[str], dst: Path, spec: QuantizeSpec, data: Dataset) -> None:
    import onnx
    from onnx import helper
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(src), load_external_data=False)
    dtypes = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in model.graph.input}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        str(src),
        str(dst),
        _Reader(data, spec.calibration_samples, dtypes),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=spec.per_channel,
        reduce_range=spec.reduce_range,
        op_types_to_quantize=op_types,
        nodes_to_exclude=_excluded(spec),
        calibrate_method=methods[spec.calibration_method],
    )


def _fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    # keep_io_types: callers keep sending float32; casts sit at the edges.
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    # The converter appends the input casts at the end of the node list; ORT copes,
    # onnx.checker (and other runtimes) want topological order.
    wrapped = OnnxModel(half)
    wrapped.topological_sort()
    onnx.save_model(wrapped.model, str(dst))
