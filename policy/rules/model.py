"""The model's measured figures against the stack's accuracy gate, judged for the model's task.

Two dynamic resources carry a model: OptimizedModel (components/optimized_model.py), whose
props hold `recipe.gate` and, once built, the figures as outputs (`task`, `agreement`,
`accuracyDelta`, `cosineMean`, `cer`, ..., `metrics`: gate_table.py says which); and PromotedModel
(components/promotion.py), whose inputs hold the target stack's `gate`, the source stack's
`figures` (with its `task`) and `promotedFrom`, all known at preview.

The task is the gate's when it states one (not "auto"), else the one the build judged the model
as (the `task` figure), else classification: a model built before builds were task-aware has
only agreement and accuracy delta, and was gated on them.
"""

from __future__ import annotations

from typing import Any

from .gate_table import DEFAULTS as GATE_DEFAULTS
from .gate_table import LEGACY_TASK, METRIC_THRESHOLDS, METRICS_OUTPUT, TASKS, metric_failures
from .props import get, is_unknown, number

DYNAMIC_RESOURCE = "pulumi-python:dynamic:Resource"


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
    if isinstance(stated, str) and stated in TASKS:
        return stated
    task = get(figures, "task")
    return LEGACY_TASK if task is None else task


def _missed(figures: Any, gate: Any, where: str, origin: str | None, fix: str, required: bool) -> list[str]:
    task = task_of(figures, gate)
    if is_unknown(task) or is_unknown(gate):
        return []
    if task not in TASKS:
        return [f"{where}task: model task {task!r} is not one the gate judges ({', '.join(TASKS)})"
                f"{f' ({origin})' if origin else ''}; {fix}"]
    context = f" ({task} model{f', {origin}' if origin else ''})"
    out = []
    for check in TASKS[task]:
        raw, figure = get(figures, check.output), number(get(figures, check.output))
        threshold = GATE_DEFAULTS[check.gate] if get(gate, check.gate) is None else number(get(gate, check.gate))
        if figure is None:
            # Unknown (preview) or not built yet: nothing to judge. A promoted source without a figure its
            # task needs was never measured on it (those measured only with labels are optional).
            if required and raw is None and not check.optional and isinstance(figures, dict):
                out.append(f"{where}{check.output}: the source build measured no {check.label}, which this stack's "
                           f"gate {check.gate} needs{context}; {fix}")
            continue
        if threshold is None:  # unknown at preview
            continue
        value = check.value(figure)
        if not check.passes(value, threshold):
            relation = "below" if check.kind == "min" else "above"
            out.append(f"{where}{check.output}: model {check.label} {value:.4f} is {relation} this stack's gate "
                       f"{check.gate} {threshold:g}{context}; {fix}")
    metrics = get(figures, METRICS_OUTPUT)
    if not is_unknown(metrics) and (metrics is not None or required):
        for name, phrase in metric_failures(metrics, get(gate, METRIC_THRESHOLDS)):
            out.append(f"{where}{METRICS_OUTPUT}.{name}: model {phrase} (this stack's gate "
                       f"{METRIC_THRESHOLDS}){context}; {fix}")
    return out
