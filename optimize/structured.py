"""Structured pruning that removes structure: whole convolution channels and hidden neurons are cut out
of the weights with torch-pruning, dependency-aware, so every layer coupled to a pruned channel (the next
layer's inputs, a batch norm, a residual add) shrinks with it and the exported graph is smaller.

What is left whole, and why:
- the output layer (removing its rows would remove classes or output features);
- a group tied to a LayerNorm, GroupNorm, embedding or a bare parameter: that is a transformer's residual
  width, which its position table and every block share;
- a group of several Linear outputs that are reshaped together (attention's query, key and value): cutting
  them by neuron instead of by whole head breaks the head split, and the model's code holds the head count.
  Where the code reads the head count from the tensor, as Hugging Face's BERT-style self-attention does
  (`view(..., -1, attention_head_size)`), whole heads are removed instead, `amount` of them per layer, and
  the module's `num_attention_heads` follows.
A transformer gets faster by its FFN neurons and heads here, and by fewer layers with distillation
(optimize.students).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optimize.errors import OptimizeError
from optimize.recipe import MAX_GLOBAL_AMOUNT, PruneSpec

# Layers whose channels are a transformer's residual width.
RESIDUAL_WIDTH = ("LayerNorm", "GroupNorm", "Embedding", "RMSNorm")


def count(module: Any, example: tuple[Any, ...]) -> dict[str, int]:
    """MACs of one row and parameters, as torch-pruning counts them (by hooks on the layers)."""
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(module, tuple(t[:1] for t in example))
    return {"macs": int(macs), "params": int(params)}


def prune(module: Any, example: tuple[Any, ...], spec: PruneSpec, loss: Any = None) -> dict[str, Any]:
    """Remove `spec.amount` of the channels of every prunable group of `module`, in place.

    `example` is a batch of model inputs (tensors); `loss(module)` gives a scalar to rank channels by for
    the Taylor importance. Returns what was removed, layer by layer."""
    import torch
    import torch_pruning as tp
    from torch import nn

    before = count(module, example)
    importance: Any = (
        tp.importance.TaylorImportance() if spec.importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    )
    outputs = _output_layers(module, example)
    attention = _head_counted_attention(module)
    heads = {getattr(m, p): m.num_attention_heads for m in attention for p in ("query", "key", "value")}
    pruner = tp.pruner.MetaPruner(
        module, example, importance=importance, pruning_ratio=spec.amount, ignored_layers=outputs,
        global_pruning=spec.scope == "global", max_pruning_ratio=MAX_GLOBAL_AMOUNT,
        unwrapped_parameters=_bare_parameters(module), num_heads=heads, prune_num_heads=bool(heads),
        prune_head_dims=False, head_pruning_ratio=spec.amount,
    )  # fmt: skip
    if spec.importance == "taylor":
        if loss is None:
            raise OptimizeError("prune.importance taylor needs data to rank channels on: give --calibration")
        module.zero_grad()
        loss(module).backward()
    names = {m: n for n, m in module.named_modules()}
    removed: dict[str, list[int]] = {}
    kept_whole: set[str] = set()
    groups = list(pruner.step(interactive=True))
    plans = []
    for group in groups:
        layers = [(dep.target.module, dep.handler, idxs) for dep, idxs in group]
        why = _left_whole(layers, set(heads))
        if why:
            kept_whole.add(why)
            continue
        # The layer whose outputs go (a group's first entry may be the next layer's inputs, or an operation).
        root, _, idxs = next((e for e in layers if _cuts_outputs(e[1]) and _out_channels(e[0])), layers[0])
        width = _out_channels(root)
        if width is not None and len(idxs) >= width:
            raise OptimizeError(
                f"prune.amount {spec.amount} with scope {spec.scope} would remove every channel of "
                f"'{names.get(root, type(root).__name__)}' ({width} of {width}); lower the amount or use scope layer"
            )
        plans.append((group, root, len(idxs), width))
    for group, root, cut, width in plans:
        group.prune()
        removed[names.get(root, type(root).__name__)] = [width, width - cut] if width is not None else [cut]
    for m in attention:  # whole heads went: the module's bookkeeping follows
        m.num_attention_heads = m.query.out_features // m.attention_head_size
        m.all_head_size = m.query.out_features
    module.zero_grad(set_to_none=True)
    for p in module.parameters():
        p.grad = None
    if not plans:
        raise OptimizeError("prune.method structured found no channel it may remove in this model (kept whole: "
                            f"{', '.join(sorted(kept_whole)) or 'everything'}); use global_unstructured or distill")
    with torch.no_grad():
        try:
            module(*example)
        except Exception as exc:
            raise OptimizeError(f"the model no longer runs after structured pruning ({str(exc).splitlines()[0][:200]})"
                                "; its forward() hard-codes a width that was cut: use distill instead") from None
    after = count(module, example)
    if isinstance(module, nn.Module):
        module.eval()
    return {
        "method": "structured",
        "amount": spec.amount,
        "scope": spec.scope,
        "importance": spec.importance,
        "layers": {k: {"channels": v[0], "kept": v[1]} for k, v in removed.items() if len(v) == 2},
        "kept_whole": sorted(kept_whole),
        "params": {"before": before["params"], "after": after["params"]},
        "macs": {"before": before["macs"], "after": after["macs"]},
        "macs_ratio": round(after["macs"] / before["macs"], 4) if before["macs"] else None,
    }


def _left_whole(layers: list[tuple[Any, Any, Any]], head_counted: set[Any]) -> str | None:
    """Why a group is not pruned (see the module docstring), or None; `head_counted`: projections whose heads
    may go whole."""
    from torch import nn

    kinds = [type(m).__name__ for m, _, _ in layers]
    if any(k in RESIDUAL_WIDTH for k in kinds) or any(isinstance(m, nn.Parameter) for m, _, _ in layers):
        return "residual width (LayerNorm/embedding)"
    outs = {m for m, handler, _ in layers if isinstance(m, nn.Linear) and _cuts_outputs(handler)}
    reshaped = any(k == "_ReshapeOp" for k in kinds)
    if len(outs) >= 2 and reshaped and not outs <= head_counted:
        return "attention projections (heads)"
    return None


def _cuts_outputs(handler: Any) -> bool:
    return "out_channels" in getattr(handler, "__name__", "")


def _head_counted_attention(module: Any) -> list[Any]:
    """Self-attention modules that read their head count from the tensor (Hugging Face's BERT family:
    query/key/value Linear layers, `num_attention_heads`, `attention_head_size`)."""
    from torch import nn

    def counted(m: Any) -> bool:
        return all(isinstance(getattr(m, a, None), int) for a in ("num_attention_heads", "attention_head_size"))

    return [m for m in module.modules()
            if counted(m) and all(isinstance(getattr(m, p, None), nn.Linear) for p in ("query", "key", "value"))]


def _out_channels(layer: Any) -> int | None:
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(layer, attr):
            return int(getattr(layer, attr))
    return None


def _output_layers(module: Any, example: tuple[Any, ...]) -> list[Any]:
    """The layers whose outputs reach the model's outputs without another weight layer in between: the
    last Linear or Conv each output's autograd graph meets."""
    import torch
    from torch import nn
    from torch.utils import _pytree

    by_weight = {m.weight: m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
                 and isinstance(getattr(m, "weight", None), torch.Tensor)}  # fmt: skip
    with torch.enable_grad():
        out = module(*example)
    found: list[Any] = []
    for leaf in _pytree.tree_leaves(out):
        if isinstance(leaf, torch.Tensor) and leaf.grad_fn is not None:
            layer = _first_layer(leaf.grad_fn, by_weight)
            if layer is not None and layer not in found:
                found.append(layer)
    return found


def _first_layer(fn: Any, by_weight: dict[Any, Any]) -> Any:
    """Breadth-first from an output back through the autograd graph to the first weight of a layer."""
    seen, frontier = set(), [fn]
    while frontier:
        nxt: list[Any] = []
        for node in frontier:
            if node is None or node in seen:
                continue
            seen.add(node)
            var = getattr(node, "variable", None)
            if var is not None and var in by_weight:
                return by_weight[var]
            nxt.extend(f for f, _ in node.next_functions)
        frontier = nxt
    return None


def _bare_parameters(module: Any) -> list[tuple[Any, int]]:
    """Parameters held by the model's own modules rather than by a torch layer (a position table):
    torch-pruning must be told their channel axis, the last one, as for `x + self.pos`."""
    return [
        (p, p.dim() - 1)
        for m in module.modules() if not type(m).__module__.startswith("torch.nn")
        for p in m.parameters(recurse=False) if p.dim() >= 1
    ]  # fmt: skip


def batches(arrays: dict[str, np.ndarray], size: int) -> tuple[Any, ...]:
    """The first `size` rows of each input, as tensors (the example torch-pruning traces)."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(v[:size])) for v in arrays.values())
