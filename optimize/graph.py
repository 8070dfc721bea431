"""ONNX Runtime offline graph optimization, saved into the artifact.

The saved graph is what ORT would build at load time anyway; saving it moves
the work to build time and makes what is served inspectable. Note ORT's own
caveat: 'all' adds layout transforms tuned to the build machine's CPU, so
'extended' is the portable default.
"""

from __future__ import annotations

from pathlib import Path

from optimize.errors import OptimizeError
from optimize.recipe import GraphLevel
from optimize.sources import _first


def optimize(src: Path, dst: Path, level: GraphLevel, threads: int = 1) -> None:
    import onnxruntime as ort

    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.optimized_model_filepath = str(dst)
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OptimizeError(f"ONNX Runtime cannot load the model for graph optimization: {_first(exc)}") from None
    if not dst.is_file():
        raise OptimizeError("ONNX Runtime did not write the optimized model")
