"""The torch stages before export: distill into a student (optimize.students), prune (optimize.prune for
zeroed weights, optimize.structured for removed channels), fine-tune on the teacher's outputs
(optimize.finetune). Returns the model to export, with parameters, MACs and torch latency before and after.

Each stage's input needs are checked before any work starts, so bad input costs one line, not a training run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optimize import data as datasets
from optimize import sources
from optimize.errors import OptimizeError
from optimize.recipe import Recipe


@dataclass
class Inputs:
    """What the stages need from the build."""

    model: Path
    factory: str | None
    src: sources.Source
    example: dict[str, np.ndarray]
    baseline_run: Any  # the teacher, arrays in, every output out
    out_batch_axes: list[int]
    training: list[datasets.Dataset] = field(default_factory=list)  # calibration and training rows
    threads: int = 2
    tasks: list[str] = field(default_factory=list)  # per output (optimize.fidelity)
    kinds: list[str | None] = field(default_factory=list)  # per output: probability, log-probability or None
    _pools: list[Any] | None = None  # the teacher's outputs on the training rows, computed once

    def pools(self) -> list[Any]:
        """The teacher's outputs for every training row, batch-first (auto's trained candidates share them)."""
        if self._pools is None:
            from optimize.finetune import Pool
            from optimize.validate import predict

            self._pools = [Pool(d.inputs, predict(self.baseline_run, d, self.out_batch_axes)) for d in self.training]
        return self._pools

    def targets(self, recipe: Recipe, tasks: list[str] | None, source_out: list[np.ndarray] | None,
                names: list[str]) -> None:  # fmt: skip
        """Each output's task (the gate's, else inferred from the teacher's outputs on training rows) and
        whether its scores are probabilities, log-probabilities or neither (what the loss compares)."""
        from optimize.fidelity import distribution, plan_tasks
        from optimize.validate import predict

        rows = self.training[0] if self.training else datasets.Dataset(self.example, None)
        outputs = source_out or predict(self.baseline_run, datasets.Dataset(rows.rows(0, 256), None),
                                        self.out_batch_axes)  # fmt: skip
        self.tasks = tasks or [t for t, _ in plan_tasks(outputs, names, None, recipe.gate)]
        self.kinds = [distribution(o) for o in outputs]


def needs(recipe: Recipe, src: sources.Source) -> None:
    """Refuse, in one line, a recipe whose stages this source cannot take."""
    eager = src.format == "state_dict"
    derives = recipe.distill is not None and recipe.distill.student is None
    if recipe.prune.method == "structured" and not eager:
        raise OptimizeError(f"prune.method structured removes channels from the model's code, and a {src.format} "
                            "file has none: give a state_dict with --factory, or use global_unstructured")  # fmt: skip
    if derives and not eager:
        raise OptimizeError(f"distill.layers and distill.width build the student from the teacher's code, and a "
                            f"{src.format} file has none: give a state_dict with --factory, or name your own "
                            "student (distill.student: module:callable)")  # fmt: skip
    if recipe.finetune is not None and recipe.prune.method != "none" and recipe.distill is None and not eager:
        raise OptimizeError(f"finetune trains the pruned model, and a {src.format} file cannot be trained here: "
                            "give a state_dict with --factory")  # fmt: skip


def run(recipe: Recipe, given: Inputs, say: Callable[[str], None]) -> tuple[sources.Source, dict[str, Any] | None]:
    """(the source to export, the report's `compression` section or None when no stage ran)."""
    if recipe.distill is None and recipe.prune.method == "none":
        return given.src, None
    from optimize import structured

    src = given.src
    say("distill" if recipe.distill is not None else "prune")
    example = structured.batches(given.example, 2)
    pools = given.pools() if recipe.finetune is not None or recipe.prune.importance == "taylor" else []
    if recipe.finetune is not None and not pools:
        raise OptimizeError("finetune needs rows to train on: give --calibration or --training (the validation set "
                            "stays held out to judge the result)")  # fmt: skip
    working = sources.load(given.model, given.factory)  # a second copy: the original stays the baseline
    working.input_names = src.input_names
    stages: list[dict[str, Any]] = [{"stage": "source", **_size(src.runner(), example)}]
    report: dict[str, Any] = {"stages": stages}
    hidden = None  # block outputs the student learns too (optimize.finetune.Hidden)
    if recipe.distill is not None:
        from optimize import students

        teacher = working.model if working.format == "state_dict" else None
        student, report["distill"] = students.make(teacher, recipe.distill, example)
        if report["distill"]["kind"] == "layers":
            from optimize.finetune import Hidden

            hidden = Hidden(teacher, students.block_pairs(teacher, student, report["distill"]))
        students.check_outputs(recipe.distill, _shapes(student, example), _shapes(src.runner(), example))
        working = sources.Source(src.path, "state_dict", student, src.input_names, src.optional_inputs)
        stages.append({"stage": "distill", **_size(student, example)})
    if recipe.prune.method != "none":
        if recipe.distill is not None:
            say("prune")
        if recipe.prune.method == "structured":
            loss = _taylor_loss(pools, given) if recipe.prune.importance == "taylor" else None
            report["prune"] = structured.prune(working.model, example, recipe.prune, loss)
        else:
            from optimize import prune

            report["prune"] = prune.apply(working, recipe.prune)
        stages.append({"stage": "prune", **_size(working.runner(), example)})
    if recipe.finetune is not None:
        say("finetune")
        from optimize import finetune

        report["finetune"] = finetune.train(working.model, pools, given.tasks, given.kinds, given.out_batch_axes,
                                            recipe.finetune, say, hidden,
                                            keep_zeros=recipe.prune.method == "global_unstructured")  # fmt: skip
        report["finetune"]["matched_blocks"] = len(hidden.pairs) if hidden else 0
        stages.append({"stage": "finetune", **_size(working.model, example)})
    if working.format == "state_dict":  # trained: inference from here on
        working.model.eval()
        working.model.requires_grad_(False)
    from optimize.prune import compare_latency

    one = {k: v[:1] for k, v in given.example.items()}
    report["latency_torch"] = compare_latency(src.runner(), working.runner(), one, given.threads)
    return working, report


def pruning_section(recipe: Recipe, compression: dict[str, Any] | None) -> dict[str, Any] | None:
    """report.json's `pruning`: what the prune stage did, with the torch latency it measured."""
    if compression is None or "prune" not in compression:
        return None
    latency = compression["latency_torch"]
    if recipe.prune.method == "global_unstructured":
        from optimize.prune import dense_note

        latency = {**latency, "note": dense_note(latency)}
    return {**compression["prune"], "latency": latency}


def _taylor_loss(pools: list[Any], given: Inputs) -> Callable[[Any], Any]:
    """What Taylor importance ranks channels by, on up to 64 training rows: the outputs' energy (see below)."""
    import torch

    from optimize import finetune

    if not pools:
        raise OptimizeError("prune.importance taylor ranks channels on data: give --calibration or --training")
    pool = pools[0]
    rows = slice(0, min(64, len(pool)))

    def loss(module: Any) -> Any:
        args = [torch.from_numpy(np.ascontiguousarray(v[rows])) for v in pool.inputs.values()]
        outs = finetune._outputs(module(*args), given.out_batch_axes)
        # The pruned model starts as the teacher, so its outputs' distance is zero: rank by the outputs' own
        # scale instead (the first-order change of what the model computes), as torch-pruning's examples do.
        return sum(o.float().pow(2).mean() for o in outs)

    return loss


def _shapes(module: Any, example: tuple[Any, ...]) -> list[tuple[int, ...]]:
    import torch
    from torch.utils import _pytree

    with torch.no_grad():
        out = module(*example)
    return [tuple(t.shape) for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _size(module: Any, example: tuple[Any, ...]) -> dict[str, Any]:
    """Parameters and MACs of one row; MACs are counted by layer hooks, which a TorchScript or an exported
    program does not run (None then)."""
    from optimize import structured

    try:
        return dict(structured.count(module, example))
    except Exception:  # a model whose layers take no hooks: parameters only
        params = sum(p.numel() for p in module.parameters()) if hasattr(module, "parameters") else None
        return {"macs": None, "params": params}
