"""The model's measured figures against the stack's accuracy gate.

Two dynamic resources carry a model: OptimizedModel (components/optimized_model.py), whose
props hold `recipe.gate` and, once built, the figures as outputs (`agreement`,
`accuracyDelta`, ...); and PromotedModel (components/promotion.py), whose inputs hold the
target stack's `gate`, the source stack's `figures` and `promotedFrom`, all known at preview.
"""

from __future__ import annotations

from typing import Any

from .props import get, number

DYNAMIC_RESOURCE = "pulumi-python:dynamic:Resource"
TOLERANCE = 1e-12  # float slack, as optimize/validate.py and components/release.py judge a gate


def _is_promoted(props: dict[str, Any]) -> bool:
    return get(props, "promotedFrom") is not None or get(props, "figures") is not None


def model_meets_gate(type_token: str, props: dict[str, Any]) -> list[str]:
    """Whatever is known now: a promotion at preview, a built model's outputs at the end of `up`."""
    if type_token != DYNAMIC_RESOURCE:
        return []
    if _is_promoted(props):
        source = get(props, "promotedFrom")
        origin = f" (promoted from {source})" if isinstance(source, str) else ""
        return _missed(get(props, "figures"), get(props, "gate"), "figures.", origin,
                       "promote a model that passes, or relax modelstack:recipe's gate")
    if isinstance(get(props, "recipe"), dict):
        return _missed(props, get(props, "recipe", "gate"), "", "",
                       "change modelstack:recipe so the model passes, or relax its gate")
    return []


def built_model_meets_gate(type_token: str, props: dict[str, Any]) -> list[str]:
    """For the stack policy, over outputs: a promotion's figures are inputs, judged per resource already."""
    return [] if _is_promoted(props) else model_meets_gate(type_token, props)


def _missed(figures: Any, gate: Any, where: str, origin: str, fix: str) -> list[str]:
    out = []
    agreement, floor = number(get(figures, "agreement")), number(get(gate, "min_agreement"))
    if agreement is not None and floor is not None and agreement < floor - TOLERANCE:
        out.append(f"{where}agreement: model agreement {agreement:.4f} is below this stack's gate "
                   f"min_agreement {floor:g}{origin}; {fix}")
    delta, allowed = number(get(figures, "accuracyDelta")), number(get(gate, "max_accuracy_drop"))
    if delta is not None and allowed is not None and -delta > allowed + TOLERANCE:
        out.append(f"{where}accuracyDelta: model accuracy drop {-delta:.4f} is above this stack's gate "
                   f"max_accuracy_drop {allowed:g}{origin}; {fix}")
    return out
