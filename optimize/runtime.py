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


def ort_runner(sess: Any, names: list[str], all_outputs: bool = False) -> Any:
    """A callable taking arrays in the model's input order, returning the first output (every output,
    in the graph's order, with all_outputs).

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
        outs = sess.run(None, feed)
        return outs if all_outputs else outs[0]

    return run


def torch_output_names(module: Any, arrays: list[np.ndarray]) -> list[str] | None:
    """Names for a torch model's outputs when it returns a dict or a Hugging Face ModelOutput: its keys,
    in the exporters' order (a nested tuple adds its index: `hidden_states_0`); None for a tensor or a
    tuple, which have no names of their own."""
    import torch
    from torch.utils import _pytree

    with torch.no_grad():
        out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
    leaves = [(path, t) for path, t in _pytree.tree_flatten_with_path(out)[0] if isinstance(t, torch.Tensor)]
    if not leaves or not all(path and isinstance(path[0], _pytree.MappingKey) for path, _ in leaves):
        return None
    names = ["_".join(str(getattr(k, "key", getattr(k, "idx", ""))) for k in path) for path, _ in leaves]
    return names if len(set(names)) == len(names) else None


def torch_runner(module: Any, all_outputs: bool = False) -> Any:
    """Like ort_runner, for a torch module. Its outputs are flattened as the ONNX exporters flatten them
    (tuples, lists, dicts and Hugging Face ModelOutputs in order, None left out), so output i here is
    output i of the export."""
    import torch
    from torch.utils import _pytree

    def run(*arrays: np.ndarray) -> Any:
        with torch.no_grad():  # not inference_mode: TorchScript can trip on inference tensors
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        leaves = [t.detach().float().numpy() for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        return leaves if all_outputs else leaves[0]

    return run
