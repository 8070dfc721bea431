"""The student of a distillation (recipe `distill`), made before it is trained (optimize.finetune):

- `layers: N`: a copy of the teacher that keeps N of its repeated blocks, evenly spaced from the first to
  the last, each with the teacher's weights (DistilBERT initialised its student from every other layer; the
  last block is kept here because the outputs are read from it: on all-MiniLM-L6-v2, blocks [0, 3, 5] of 6
  give embeddings at mean cosine 0.66 to the teacher's before any training, [0, 2, 4] 0.36);
- `width: w`: a copy of the teacher with the fraction w of each layer's channels kept, the strongest by
  weight magnitude (optimize.structured);
- `student: module:callable`: the user's model, checked to take the teacher's inputs and give outputs of
  the teacher's shapes.
"""

from __future__ import annotations

import copy
from typing import Any

from optimize.errors import OptimizeError
from optimize.recipe import DistillSpec, PruneSpec
from optimize.sources import _first, load_callable


def make(teacher: Any, spec: DistillSpec, example: tuple[Any, ...]) -> tuple[Any, dict[str, Any]]:
    """(student module, what was done). `teacher` is an eager module (optimize.compress.needs saw to it), or
    None when the student is the user's."""
    if spec.student is not None:
        return _from_factory(spec.student, teacher, example)
    if spec.layers is not None:
        return _fewer_layers(teacher, spec.layers)
    from optimize import structured

    student = copy.deepcopy(teacher)
    assert spec.width is not None
    stats = structured.prune(student, example, PruneSpec(method="structured", amount=round(1 - spec.width, 6)))
    return student, {"kind": "width", "width": spec.width, "layers": stats["layers"],
                     "kept_whole": stats["kept_whole"]}  # fmt: skip


def _fewer_layers(teacher: Any, keep: int) -> tuple[Any, dict[str, Any]]:
    from torch import nn

    stack = block_stack(teacher)
    if stack is None or len(stack[1]) <= keep:
        found = f"its longest has {len(stack[1])}" if stack else "it has none"
        raise OptimizeError(f"distill.layers {keep}: the teacher needs a stack of more than {keep} repeated blocks "
                            f"(an nn.ModuleList of one block type) to keep {keep} of, and {found}")  # fmt: skip
    name, blocks = stack
    last = len(blocks) - 1
    kept = [last] if keep == 1 else [int(i * last / (keep - 1) + 0.5) for i in range(keep)]
    student = copy.deepcopy(teacher)
    parent_name, _, attr = name.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    setattr(parent, attr, nn.ModuleList(getattr(parent, attr)[i] for i in kept))
    for module in student.modules():  # Hugging Face models read their depth from the config
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "num_hidden_layers", None) == len(blocks):
            config.num_hidden_layers = keep
    return student, {"kind": "layers", "stack": name, "teacher_layers": len(blocks), "kept": kept}


def block_pairs(teacher: Any, student: Any, info: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(teacher block, student block) for each block a `layers` student kept, in order."""
    mine, theirs = student.get_submodule(info["stack"]), teacher.get_submodule(info["stack"])
    return [(theirs[i], mine[k]) for k, i in enumerate(info["kept"])]


def block_stack(module: Any) -> tuple[str, Any] | None:
    """The longest nn.ModuleList whose children are all of one type (an encoder's layers)."""
    from torch import nn

    stacks = [
        (name, sub) for name, sub in module.named_modules()
        if isinstance(sub, nn.ModuleList) and len(sub) > 1 and len({type(b) for b in sub}) == 1
    ]  # fmt: skip
    return max(stacks, key=lambda s: len(s[1])) if stacks else None


def _from_factory(spec: str, teacher: Any, example: tuple[Any, ...]) -> tuple[Any, dict[str, Any]]:
    import torch
    from torch.utils import _pytree

    student = load_callable(spec, "distill.student")()
    if not isinstance(student, torch.nn.Module):
        raise OptimizeError(f"distill.student '{spec}' returned {type(student).__name__}, not a torch.nn.Module")
    student.eval()
    with torch.no_grad():
        try:
            got = student(*example)
        except Exception as exc:
            shapes = ", ".join(str(list(t.shape)) for t in example)
            raise OptimizeError(f"distill.student '{spec}' does not take the teacher's inputs ({shapes}): "
                                f"{_first(exc)}") from None  # fmt: skip
    mine = [tuple(t.shape) for t in _pytree.tree_leaves(got) if isinstance(t, torch.Tensor)]
    return student, {"kind": "student", "student": spec, "output_shapes": mine}


def check_outputs(spec: DistillSpec, student_shapes: list[tuple[int, ...]],
                  teacher_shapes: list[tuple[int, ...]]) -> None:  # fmt: skip
    """A student must give the teacher's outputs, shape for shape, to be judged against it."""
    if student_shapes != teacher_shapes:
        who = f"distill.student '{spec.student}'" if spec.student else "the student"
        raise OptimizeError(f"{who} returns outputs of shapes {[list(s) for s in student_shapes]} but the teacher "
                            f"returns {[list(s) for s in teacher_shapes]}; they must match")  # fmt: skip


def parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
