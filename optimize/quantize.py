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
from pathlib import Path
from typing import Any

import numpy as np

from optimize.data import Dataset
from optimize.errors import OptimizeError
from optimize.recipe import QuantizeSpec
from optimize.sources import _first

CALIBRATION_BATCH = 16


def quantize(src: Path, dst: Path, spec: QuantizeSpec, calibration: Dataset | None = None) -> None:
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
    stops. ONNX Runtime's symbolic shape inference knows them, so a graph with contrib ops is annotated
    with it first (next to ``dst``). And the quantizer matches op types without their domain: it would
    turn ONNX's own Attention (opset 23) into its contrib QAttention, which takes other inputs, so only
    the contrib Attention is quantized."""
    import onnx

    from optimize.fusion import has_onnx_attention

    model = onnx.load(str(src))
    op_types = list(spec.op_types)
    if has_onnx_attention(model):
        op_types = [op for op in op_types if op != "Attention"]
    if not any(node.domain == "com.microsoft" for node in model.graph.node):
        return src, op_types
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    annotated = dst.with_name(f"{dst.stem}.shapes.onnx")
    onnx.save_model(SymbolicShapeInference.infer_shapes(model, auto_merge=True), str(annotated))
    return annotated, op_types


def _dynamic(src: Path, op_types: list[str], dst: Path, spec: QuantizeSpec) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=spec.per_channel,
        reduce_range=spec.reduce_range,
        op_types_to_quantize=op_types,
    )


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
