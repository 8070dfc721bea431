"""The model's measured figures against the stack's accuracy gate, judged for the model's task.

Two dynamic resources carry a model: OptimizedModel (components/optimized_model.py), whose
props hold `recipe.gate` and, once built, the figures as outputs (`task`, `agreement`,
`accuracyDelta`, `cosineMean`, `cosineMin`, `relativeError`, ...); and PromotedModel
(components/promotion.py), whose inputs hold the target stack's `gate`, the source stack's
`figures` (with its `task`) and `promotedFrom`, all known at preview.

The task is the gate's when it states one (not "auto"), else the one the build judged the model
as (the `task` figure), else classification: a model built before builds were task-aware has
only agreement and accuracy delta, and was gated on them.
"""

from __future__ import annotations

from typing import Any

from .props import get, is_unknown, number

DYNAMIC_RESOURCE = "pulumi-python:dynamic:Resource"
TOLERANCE = 1e-12  # float slack, as optimize/fidelity.py and components/release.py judge a gate

# What the gate judges per task: (figure, gate key, min|max). The same table as optimize/fidelity.py
# `checks` and components/release.py GATE_CHECKS; this pack's venv has no numpy, so it cannot import
# them: tests/policy_pack/test_gate_table.py holds the three to the same verdicts.
# TOP1 is judged as the top-1 drop, -accuracyDelta, and only where labels gave one (not null).
TOP1 = "accuracyDelta"
_ARGMAX = (("agreement", "min_agreement", "min"), (TOP1, "max_accuracy_drop", "max"))
GATE_CHECKS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "classification": _ARGMAX,
    "sequence": _ARGMAX,
    "embedding": (("cosineMean", "min_cosine", "min"), ("cosineMin", "min_cosine_worst", "min")),
    "regression": (("relativeError", "max_relative_error", "max"),),
}
# optimize/recipe.py GateSpec's defaults, for a gate written before a threshold existed.
GATE_DEFAULTS = {"min_agreement": 0.99, "max_accuracy_drop": 0.01, "min_cosine": 0.99, "min_cosine_worst": 0.95,
                 "max_relative_error": 0.05}
LEGACY_TASK = "classification"
LABELS = {"agreement": "agreement", TOP1: "accuracy drop", "cosineMean": "mean cosine similarity",
          "cosineMin": "worst-row cosine similarity", "relativeError": "relative error"}


def _is_promoted(props: dict[str, Any]) -> bool:
    return get(props, "promotedFrom") is not None or get(props, "figures") is not None


def model_meets_gate(type_token: str, props: dict[str, Any]) -> list[str]:
    """Whatever is known now: a promotion at preview, a built model's outputs at the end of `up`."""
    if type_token != DYNAMIC_RESOURCE:
        return []
    if _is_promoted(props):
        source = get(props, "promotedFrom")
        # A promotion's figures are known at preview: one the gate needs but the source lacks is a miss.
        return _missed(get(props, "figures"), get(props, "gate"), "figures.",
                       f"promoted from {source}" if isinstance(source, str) else None,
                       "promote a model that passes, or relax modelstack:recipe's gate", required=True)
    if isinstance(get(props, "recipe"), dict):
        return _missed(props, get(props, "recipe", "gate"), "", None,
                       "change modelstack:recipe so the model passes, or relax its gate", required=False)
    return []


def built_model_meets_gate(type_token: str, props: dict[str, Any]) -> list[str]:
    """For the stack policy, over outputs: a promotion's figures are inputs, judged per resource already."""
    return [] if _is_promoted(props) else model_meets_gate(type_token, props)


def task_of(figures: Any, gate: Any) -> Any:
    """The task to judge as: the gate's if it states one, else the figures' `task`, else LEGACY_TASK;
    UNKNOWN while the figures' task is not known yet."""
    stated = get(gate, "task")
    if isinstance(stated, str) and stated in GATE_CHECKS:
        return stated
    task = get(figures, "task")
    return LEGACY_TASK if task is None else task


def _missed(figures: Any, gate: Any, where: str, origin: str | None, fix: str, required: bool) -> list[str]:
    task = task_of(figures, gate)
    if is_unknown(task) or is_unknown(gate):
        return []
    if task not in GATE_CHECKS:
        return [f"{where}task: model task {task!r} is not one the gate judges ({', '.join(GATE_CHECKS)})"
                f"{f' ({origin})' if origin else ''}; {fix}"]
    context = f" ({task} model{f', {origin}' if origin else ''})"
    out = []
    for key, gate_key, kind in GATE_CHECKS[task]:
        raw, value = get(figures, key), number(get(figures, key))
        threshold = GATE_DEFAULTS[gate_key] if get(gate, gate_key) is None else number(get(gate, gate_key))
        if value is None:
            # Unknown (preview) or not built yet: nothing to judge. A promoted source without a figure its
            # task needs was never measured on it (the top-1 drop needs labels: it is optional).
            if required and raw is None and key != TOP1 and isinstance(figures, dict):
                out.append(f"{where}{key}: the source build measured no {LABELS[key]}, which this stack's gate "
                           f"{gate_key} needs{context}; {fix}")
            continue
        if threshold is None:  # unknown at preview
            continue
        if key == TOP1:
            if -value > threshold + TOLERANCE:
                out.append(f"{where}{key}: model accuracy drop {-value:.4f} is above this stack's gate "
                           f"{gate_key} {threshold:g}{context}; {fix}")
        elif kind == "min" and value < threshold - TOLERANCE:
            out.append(f"{where}{key}: model {LABELS[key]} {value:.4f} is below this stack's gate "
                       f"{gate_key} {threshold:g}{context}; {fix}")
        elif kind == "max" and value > threshold + TOLERANCE:
            out.append(f"{where}{key}: model {LABELS[key]} {value:.4f} is above this stack's gate "
                       f"{gate_key} {threshold:g}{context}; {fix}")
    return out
