"""The accuracy gate's table: which figures each task is judged on, against which gate field, which way.

One definition for the three judges: the build (optimize/fidelity.py), a promotion's check of its source
stack (components/release.py) and this pack (rules/model.py). Dependency-free, as this pack's venv has
no numpy; the main venv imports it as `policy.rules.gate_table`.

Beside the task's figures, a recipe may name its own metric (`gate.metric: module:function`) with a
threshold per figure it returns (`gate.metric_thresholds: {name: {min: x} | {max: x}}`): those are
judged for every task, by `metric_failures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOLERANCE = 1e-12  # float slack: a figure exactly on its threshold passes


@dataclass(frozen=True)
class Check:
    figure: str  # the key in report.json `accuracy`
    output: str  # the stack output (and a promotion's `figures` key)
    gate: str  # the recipe's gate field
    kind: str  # "min" or "max": the figure must stay at or above, or at or below, the threshold
    label: str  # for people
    negate: bool = False  # judged as minus the figure (the top-1 drop is -accuracyDelta)
    # A build may lack it: measured only with labels, or added after builds that a stack may still promote
    # from. Those are judged on the rest.
    optional: bool = False

    def value(self, figure: float) -> float:
        return -figure if self.negate else figure

    def passes(self, value: float, threshold: float) -> bool:
        return value >= threshold - TOLERANCE if self.kind == "min" else value <= threshold + TOLERANCE


AGREEMENT = Check("agreement", "agreement", "min_agreement", "min", "argmax agreement")
TOP1_DROP = Check("delta", "accuracyDelta", "max_accuracy_drop", "max", "top-1 drop", negate=True, optional=True)
SEQUENCE_EXACT = Check("sequence_exact", "sequenceExact", "min_sequence_exact", "min", "share of sequences unchanged",
                       optional=True)  # fmt: skip
COSINE_MEAN = Check("cosine_mean", "cosineMean", "min_cosine", "min", "mean cosine similarity")
COSINE_MIN = Check("cosine_min", "cosineMin", "min_cosine_worst", "min", "worst-row cosine similarity")
RELATIVE_ERROR = Check("relative_error", "relativeError", "max_relative_error", "max", "relative error")
CER = Check("cer", "cer", "max_cer", "max", "character error rate against the source")
CER_INCREASE = Check("cer_increase", "cerIncrease", "max_cer_increase", "max",
                     "character error rate increase against the labels", optional=True)  # fmt: skip

TASKS: dict[str, tuple[Check, ...]] = {
    "classification": (AGREEMENT, TOP1_DROP),
    "sequence": (AGREEMENT, SEQUENCE_EXACT),
    "ctc": (CER, SEQUENCE_EXACT, CER_INCREASE),
    "embedding": (COSINE_MEAN, COSINE_MIN),
    "regression": (RELATIVE_ERROR,),
    # An output whose task the data cannot show: judged by closeness alone, never by argmax.
    "closeness": (RELATIVE_ERROR, COSINE_MIN),
}
# Every figure the build exports, whatever its task (a promotion reads them all).
CHECKS: tuple[Check, ...] = (AGREEMENT, TOP1_DROP, SEQUENCE_EXACT, COSINE_MEAN, COSINE_MIN, RELATIVE_ERROR, CER,
                             CER_INCREASE)  # fmt: skip
# The recipe's defaults (optimize/recipe.py GateSpec reads them here), and what a gate written before a
# threshold existed is judged with.
DEFAULTS: dict[str, float] = {
    "min_agreement": 0.99,
    "max_accuracy_drop": 0.01,
    "min_sequence_exact": 0.0,
    "min_cosine": 0.99,
    "min_cosine_worst": 0.95,
    "max_relative_error": 0.05,
    "max_cer": 0.01,
    "max_cer_increase": 0.01,
}
# A model built before builds were task-aware has only agreement and accuracy delta, and was gated on them.
LEGACY_TASK = "classification"
# The stack output holding a recipe metric's figures ({name: value}), and the gate field of its thresholds.
METRICS_OUTPUT = "metrics"
METRIC_THRESHOLDS = "metric_thresholds"


def metric_failures(values: Any, thresholds: Any) -> list[tuple[str, str]]:
    """(name, phrase) for each recipe-metric threshold ({name: {min|max: x}}) its figure misses or lacks."""
    out: list[tuple[str, str]] = []
    if not isinstance(thresholds, dict):
        return out
    values = values if isinstance(values, dict) else {}
    for name, bounds in sorted(thresholds.items()):
        value = values.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append((name, f"{name}: not measured"))
            continue
        for kind in ("min", "max"):
            limit = bounds.get(kind) if isinstance(bounds, dict) else None
            if isinstance(limit, int | float) and not isinstance(limit, bool):
                below = kind == "min" and value < limit - TOLERANCE
                above = kind == "max" and value > limit + TOLERANCE
                if below or above:
                    out.append((name, f"{name} {value:.4f} is {'below' if below else 'above'} its {kind} {limit:g}"))
    return out
