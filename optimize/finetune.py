"""Fine-tuning without labels: the compressed model (a pruned copy, or a student) learns to give the source
model's outputs (the teacher's) on the calibration and training rows, output by output, with the loss
its task calls for: KL divergence of temperature-softened class scores (classification, sequence, ctc),
cosine and squared error for embeddings, squared error relative to the teacher's scale otherwise.

A student that keeps some of the teacher's blocks (distill.layers) also learns each kept block's output
from the teacher's block it was initialised from (1 - cosine over the hidden axis, as DistilBERT's hidden-state
loss): the pooled output alone is a weak signal for a sentence encoder.

Bounded by the recipe (`finetune`): `steps` or `time_budget_s`, whichever comes first; seeded. Weights a
pruning step zeroed stay zero. On a CUDA GPU when torch sees one (the model comes back to the CPU for export).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimize.errors import OptimizeError
from optimize.recipe import FinetuneSpec

CLASS_SCORES = ("classification", "sequence", "ctc")
CURVE_POINTS = 60  # loss points kept for the report and the chart
PROGRESS_LINES = 10  # "finetune: step k/n" lines a run reports


@dataclass
class Hidden:
    """Block outputs a student learns besides the model's outputs: (teacher block, student block) pairs, and
    the teacher module that runs alongside to produce them."""

    teacher: Any
    pairs: list[tuple[Any, Any]]


@dataclass
class Pool:
    """Rows to train on (model inputs by name) and the teacher's outputs for them, batch-first."""

    inputs: dict[str, np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


def train(student: Any, pools: list[Pool], tasks: list[str], kinds: list[str | None], batch_axes: list[int],
          spec: FinetuneSpec, say: Callable[[str], None] = lambda _: None,
          hidden: Hidden | None = None, keep_zeros: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train `student` in place; returns the run's figures and its loss curve. `keep_zeros`: the weights
    an unstructured pruning step zeroed stay zero."""
    import torch

    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    student.to(device)
    matched = _BlockOutputs(hidden, device) if hidden is not None else None
    try:
        frozen = _zeros(student) if keep_zeros else []
        return _train(student, pools, tasks, kinds, batch_axes, spec, say, rng, device, matched, frozen)
    finally:
        if matched is not None:
            matched.close()
        student.to("cpu")
        student.eval()


def _train(student: Any, pools: list[Pool], tasks: list[str], kinds: list[str | None], batch_axes: list[int],
           spec: FinetuneSpec, say: Callable[[str], None], rng: Any, device: str,
           matched: _BlockOutputs | None, frozen_zeros: list[tuple[Any, Any]]) -> dict[str, Any]:  # fmt: skip
    import torch

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    cosine = lambda s: 0.5 * (1 + np.cos(np.pi * min(s, spec.steps) / spec.steps))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    sizes = np.array([len(p) for p in pools], dtype=np.float64)

    def step_loss() -> Any:
        pool = pools[int(rng.choice(len(pools), p=sizes / sizes.sum()))]
        idx = rng.choice(len(pool), size=spec.batch_size, replace=len(pool) < spec.batch_size)
        args = [torch.from_numpy(np.ascontiguousarray(v[idx])).to(device) for v in pool.inputs.values()]
        if matched is not None:
            matched.run_teacher(args)
        outs = _outputs(student(*args), batch_axes)
        loss = sum(
            _loss(out, torch.from_numpy(target[idx]).to(device), task, kind, spec.temperature)
            for out, target, task, kind in zip(outs, pool.targets, tasks, kinds, strict=True)
        )
        return loss + matched.loss() if matched is not None else loss

    student.train()
    first = _one_step_seconds(student, step_loss)
    if first > spec.time_budget_s:
        raise OptimizeError(f"finetune.time_budget_s {spec.time_budget_s:g} s is less than one training step takes "
                            f"here ({first:.2f} s at batch {spec.batch_size}); raise it or lower finetune.batch_size")
    every, tell = max(1, spec.steps // CURVE_POINTS), max(1, spec.steps // PROGRESS_LINES)
    curve: list[list[float]] = []
    start, done, stopped_by, running = time.perf_counter(), 0, "steps", None
    for step in range(1, spec.steps + 1):
        loss = step_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        _restore_zeros(frozen_zeros)
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        done = step
        if step % every == 0 or step == 1:
            curve.append([step, round(value, 6)])
        if step % tell == 0:
            say(f"finetune: step {step}/{spec.steps}, loss {running:.4g}")
        if time.perf_counter() - start > spec.time_budget_s:
            stopped_by = "time_budget_s"
            break
    if curve[-1][0] != done:
        curve.append([done, round(value, 6)])
    return {
        "steps": done,
        "steps_asked": spec.steps,
        "stopped_by": stopped_by,
        "seconds": round(time.perf_counter() - start, 3),
        "rows": int(sizes.sum()),
        "device": device,
        "loss_first": curve[0][1],
        "loss_last": round(running or 0.0, 6),
        "curve": curve,
        "spec": spec.model_dump(),
    }


class _BlockOutputs:
    """Forward hooks that keep the paired blocks' outputs of one step, teacher's and student's."""

    def __init__(self, hidden: Hidden, device: str) -> None:
        hidden.teacher.to(device).eval()
        self.teacher = hidden.teacher
        self.got: dict[str, list[Any]] = {"teacher": [], "student": []}
        self.handles = [block.register_forward_hook(self._keep(side))
                        for pair in hidden.pairs for side, block in zip(("teacher", "student"), pair, strict=True)]

    def _keep(self, side: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            from torch.utils import _pytree

            self.got[side].append(next(t for t in _pytree.tree_leaves(output) if hasattr(t, "shape")))

        return hook

    def run_teacher(self, args: list[Any]) -> None:
        import torch

        self.got = {"teacher": [], "student": []}
        with torch.no_grad():
            self.teacher(*args)

    def loss(self) -> Any:
        """Mean over the pairs of 1 - cosine along the hidden axis, over every position."""
        import torch.nn.functional as F

        pairs = list(zip(self.got["teacher"], self.got["student"], strict=True))
        self.got = {"teacher": [], "student": []}
        return sum((1 - F.cosine_similarity(s.float(), t.float(), dim=-1)).mean() for t, s in pairs) / len(pairs)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.teacher.to("cpu")


def _one_step_seconds(student: Any, step_loss: Callable[[], Any]) -> float:
    """One forward and backward pass, timed, with nothing updated: a budget shorter than this trains nothing."""
    t = time.perf_counter()
    step_loss().backward()
    student.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def _outputs(out: Any, batch_axes: list[int]) -> list[Any]:
    """The model's output tensors in the exporters' order, batch-first (as the teacher's targets)."""
    import torch
    from torch.utils import _pytree

    leaves = [t for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return [t.float().movedim(axis, 0) for t, axis in zip(leaves, batch_axes, strict=True)]


def _loss(out: Any, target: Any, task: str, kind: str | None, temperature: float) -> Any:
    import torch.nn.functional as F

    if task in CLASS_SCORES:
        classes = out.shape[-1]
        s, t = _log_scores(out, kind).reshape(-1, classes), _log_scores(target, kind).reshape(-1, classes)
        return F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                        reduction="batchmean") * temperature**2  # fmt: skip
    scale = target.pow(2).mean().clamp(min=1e-12)
    if task == "embedding":
        flat_o, flat_t = out.reshape(len(out), -1), target.reshape(len(target), -1)
        return (1 - F.cosine_similarity(flat_o, flat_t, dim=1)).mean() + F.mse_loss(out, target) / scale
    return F.mse_loss(out, target) / scale


def _log_scores(x: Any, kind: str | None) -> Any:
    """Scores whose softmax is the output's distribution: logits and log-probabilities as they are,
    probabilities as their logarithm."""
    return x.clamp(min=1e-8).log() if kind == "probability" else x


def _zeros(module: Any) -> list[tuple[Any, Any]]:
    """(weight, mask of its zeros) for every weight matrix and kernel that has zeros."""
    import torch

    with torch.no_grad():
        masks = [(p, p == 0) for p in module.parameters() if p.dim() >= 2 and p.is_floating_point()]
    return [(p, zero) for p, zero in masks if bool(zero.any())]


def _restore_zeros(frozen: list[tuple[Any, Any]]) -> None:
    import torch

    with torch.no_grad():
        for p, zero in frozen:
            p.masked_fill_(zero, 0.0)
