"""Running models: an ORT CPU session and a torch runner with the same feeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def ort_session(path: Path, threads: int, spin: bool = True) -> Any:
    """spin=False: idle intra-op threads sleep instead of busy-waiting (ORT's default is to spin)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_runner(sess: Any, names: list[str]) -> Any:
    """A callable taking arrays in the model's input order, returning the first output.

    Data rows are matched to ONNX inputs by position: the exporters keep the
    forward() argument order, and some renumber names.
    """
    specs = sess.get_inputs()
    if len(specs) != len(names):
        raise ValueError(f"ONNX model takes {len(specs)} inputs, data has {len(names)}")
    dtypes = [ORT_TYPES.get(s.type) for s in specs]

    def run(*arrays: np.ndarray) -> np.ndarray:
        feed = {
            s.name: (a.astype(t, copy=False) if t is not None else a)
            for s, t, a in zip(specs, dtypes, arrays, strict=True)
        }
        return sess.run(None, feed)[0]

    return run


def torch_runner(module: Any) -> Any:
    import torch

    def run(*arrays: np.ndarray) -> np.ndarray:
        with torch.no_grad():  # not inference_mode: TorchScript can trip on inference tensors
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out.detach().float().numpy()

    return run
