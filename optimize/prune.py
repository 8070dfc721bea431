"""Pruning with torch.nn.utils.prune, made permanent before export.

torch's pruning utilities work on nn.Module attributes, but TorchScript modules
and torch.export programs cannot take its forward pre-hooks. So each weight is
copied into a one-parameter shim module, pruned there (global L1 magnitude or
L2 structured rows/channels), the mask is made permanent with prune.remove,
and the result is copied back in place. Zeroed weights keep their dense shape:
dense kernels do the same work, which the pipeline measures and reports.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from optimize.recipe import PruneSpec
from optimize.sources import Source


def prunable(source: Source) -> dict[str, Any]:
    """Weight matrices and conv kernels by name; embeddings and norms are left alone."""
    import torch

    if source.format == "exported_program":
        ep = source.model
        sig = ep.graph_signature
        emb = {
            sig.inputs_to_parameters.get(n.args[0].name)
            for n in ep.graph.nodes
            if n.op == "call_function" and n.target == torch.ops.aten.embedding.default
        }
        params = {k: v for k, v in ep.state_dict.items() if k in sig.parameters}
    else:
        module = source.model
        emb = set()
        for mname, sub in module.named_modules():
            kind = getattr(sub, "original_name", type(sub).__name__)
            if kind == "Embedding":
                emb.add(f"{mname}.weight" if mname else "weight")
        params = dict(module.named_parameters())
    return {
        k: v
        for k, v in params.items()
        if k not in emb and k.endswith("weight") and v.dim() >= 2 and v.is_floating_point()
    }


def apply(source: Source, spec: PruneSpec) -> dict[str, Any]:
    """Prune in place; returns the measured sparsity."""
    import torch
    from torch import nn
    from torch.nn.utils import prune

    weights = prunable(source)
    if not weights:
        return {"method": spec.method, "amount": spec.amount, "pruned_tensors": 0, "sparsity": 0.0}
    names = list(weights)
    if spec.method == "structured":
        # Keep the output layer whole: removing its rows would delete classes.
        names = names[:-1] or names
    shims = {}
    for name in names:
        shim = nn.Module()
        shim.weight = nn.Parameter(weights[name].detach().clone())
        shims[name] = shim
    if spec.method == "global_unstructured":
        prune.global_unstructured(
            [(s, "weight") for s in shims.values()], pruning_method=prune.L1Unstructured, amount=spec.amount
        )
    else:
        for shim in shims.values():
            prune.ln_structured(shim, "weight", amount=spec.amount, n=2, dim=0)
    with torch.no_grad():
        for name, shim in shims.items():
            prune.remove(shim, "weight")
            weights[name].copy_(shim.weight)
    return {"method": spec.method, "amount": spec.amount, "pruned_tensors": len(shims), **sparsity(source)}


def sparsity(source: Source) -> dict[str, float]:
    """Fraction of exact zeros in the prunable weights and in all parameters."""
    weights = prunable(source)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    if source.format == "exported_program":
        every = [v for k, v in source.model.state_dict.items() if k in source.model.graph_signature.parameters]
    else:
        every = list(source.model.parameters())
    all_zeros = sum(int((p == 0).sum()) for p in every)
    all_total = sum(p.numel() for p in every)
    return {
        "sparsity": round(zeros / total, 6) if total else 0.0,
        "sparsity_all_params": round(all_zeros / all_total, 6) if all_total else 0.0,
    }


def compare_latency(before: Any, after: Any, inputs: dict[str, np.ndarray], threads: int, rounds: int = 30) -> dict:
    """p50 of the dense and the pruned torch model, interleaved in one process so
    load from other processes hits both alike."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _interleaved(before, after, inputs, rounds)
    finally:
        torch.set_num_threads(previous)  # the caller (e.g. a Pulumi provider) keeps its own setting


def _interleaved(before: Any, after: Any, inputs: dict[str, np.ndarray], rounds: int) -> dict:
    import torch

    args = [torch.from_numpy(v) for v in inputs.values()]
    times: dict[str, list[float]] = {"before": [], "after": []}
    with torch.no_grad():  # not inference_mode: TorchScript can trip on inference tensors
        for m in (before, after):
            for _ in range(3):
                m(*args)
        for _ in range(rounds):
            for key, m in (("before", before), ("after", after)):
                t = time.perf_counter()
                m(*args)
                times[key].append(time.perf_counter() - t)
    p50 = {k: float(np.median(v) * 1000) for k, v in times.items()}
    return {
        "p50_ms_dense": round(p50["before"], 4),
        "p50_ms_pruned": round(p50["after"], 4),
        "ratio": round(p50["after"] / p50["before"], 3),
    }


def dense_note(latency: dict[str, Any]) -> str:
    """What unstructured pruning's latency shows, said once in the report."""
    return ("zeroed weights keep their dense shape, so dense torch kernels do the same work: "
            f"measured pruned/dense p50 = {latency['ratio']:.2f} at batch 1")
