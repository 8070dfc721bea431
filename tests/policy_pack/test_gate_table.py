"""One gate table (policy/rules/gate_table.py), three judges: the build (optimize/fidelity.py), a
promotion's source check (components/release.py) and the policy pack (policy/rules/model.py). These
tests hold the three to the same verdicts on figures at, just inside and just outside each threshold,
as the build exports them, and the table to the recipe's fields."""

from __future__ import annotations

import itertools
import re
from typing import Any, get_args

import pytest

from artifacts.build import _outputs
from components import release
from optimize import fidelity
from optimize.recipe import GateSpec, Task
from policy.rules import gate_table
from policy.rules import model as policy
from tests.policy_pack import resources as r

MODEL = "pulumi-python:dynamic:Resource"
GATES = {
    "defaults": {},
    "strict": {"min_agreement": 0.999, "max_accuracy_drop": 0.0, "min_cosine": 0.999, "min_cosine_worst": 0.99,
               "max_relative_error": 0.01, "min_sequence_exact": 0.9, "max_cer": 0.001, "max_cer_increase": 0.0},
    "loose": {"min_agreement": 0.5, "max_accuracy_drop": 0.5, "min_cosine": 0.5, "min_cosine_worst": 0.0,
              "max_relative_error": 1.0, "min_sequence_exact": 0.0, "max_cer": 0.5, "max_cer_increase": 0.5},
}
# Per figure: values on, just inside and just outside the thresholds above, and far from all of them
# (None: not measured, for the figures a build may lack).
VALUES: dict[str, tuple[Any, ...]] = {
    "agreement": (0.3, 0.5, 0.989, 0.99, 0.999, 1.0),
    "delta": (None, 0.02, 0.0, -0.01, -0.0100001, -0.3),
    "sequence_exact": (None, 0.0, 0.5, 0.899, 0.9, 1.0),
    "cosine_mean": (0.4, 0.5, 0.989, 0.99, 0.999, 1.0),
    "cosine_min": (-0.2, 0.0, 0.949, 0.95, 0.99),
    "relative_error": (0.0, 0.01, 0.05, 0.0500001, 1.0, 1.5),
    "cer": (0.0, 0.001, 0.0010001, 0.01, 0.011, 0.6),
    "cer_increase": (None, -0.01, 0.0, 0.0001, 0.01, 0.6),
}


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    """Every task, gate and combination of the values of the task's own figures."""
    out = []
    for task, checks in gate_table.TASKS.items():
        figures = [c.figure for c in checks]
        for gate in GATES:
            for values in itertools.product(*(VALUES[f] for f in figures)):
                out.append((task, gate, dict(zip(figures, values, strict=True))))
    return out


def build_verdict(task: str, gate_name: str, acc: dict[str, Any]) -> set[str]:
    """The gate keys the build misses (optimize/fidelity.py)."""
    spec = GateSpec(task=task, **GATES[gate_name])  # type: ignore[arg-type]
    return {c["gate"].removeprefix("gate.") for c in fidelity.checks(acc, task, spec) if not c["passed"]}


def exported(task: str, acc: dict[str, Any]) -> dict[str, Any]:
    """The figures as the build exports them (artifacts/build.py), as a stack promoting it reads them."""
    report = {"digest": "cd" * 32, "accuracy": acc, "fidelity": {"task": task}}
    outs = _outputs({}, report, "file://store/" + "cd" * 32, "ab" * 32, cache_hit=False)
    return {key: outs[key] for key in (*release.FIGURES, *release.TASK_FIGURES, "task")}


def release_verdict(figures: dict[str, Any], gate: dict[str, Any]) -> set[str]:
    phrases = release.gate_failures(figures, {**GateSpec().model_dump(), **gate})
    return {re.findall(r"\b((?:min|max)_\w+)", p)[0] for p in phrases}


def policy_verdict(figures: dict[str, Any], gate: dict[str, Any]) -> set[str]:
    props = r.promoted_model(gate={**GateSpec().model_dump(), **gate})
    props["figures"] = figures
    return {re.search(r"this stack's gate (\w+)", m)[1]  # type: ignore[index]
            for m in policy.model_meets_gate(MODEL, props)}


def test_the_three_judges_give_the_same_verdicts():
    seen: dict[str, list[int]] = {task: [0, 0] for task in gate_table.TASKS}
    disagree = []
    for task, gate_name, acc in cases():
        gate = GATES[gate_name]
        expected = build_verdict(task, gate_name, acc)
        figures = exported(task, acc)
        got = (release_verdict(figures, gate), policy_verdict(figures, gate))
        if got != (expected, expected):
            disagree.append((task, gate_name, acc, expected, *got))
        seen[task][bool(expected)] += 1
    assert not disagree, f"{len(disagree)} cases disagree, e.g. {disagree[:3]}"
    assert all(passed > 5 and failed > 5 for passed, failed in seen.values()), seen  # both verdicts, every task


@pytest.mark.parametrize(
    ("figures", "missed"),
    [({"mean_iou": 0.95, "worst_iou": 0.8}, set()), ({"mean_iou": 0.9499, "worst_iou": 0.8}, {"mean_iou"}),
     ({"mean_iou": 0.96, "worst_iou": 0.7}, {"worst_iou"}), ({"mean_iou": 0.96}, {"worst_iou"})],
)
def test_the_recipe_metric_is_judged_alike(figures, missed):
    thresholds = {"mean_iou": {"min": 0.95}, "worst_iou": {"min": 0.75, "max": 1.0}}
    spec = GateSpec(metric="m:f", metric_thresholds=thresholds)  # type: ignore[arg-type]
    if set(figures) == set(thresholds):
        assert {c["metric"].removeprefix("metric.") for c in fidelity.metric_checks(figures, spec)
                if not c["passed"]} == missed  # fmt: skip
    gate = spec.model_dump()
    exported_ = {"task": "regression", "relativeError": 0.0, "agreement": 0.0, gate_table.METRICS_OUTPUT: figures}
    assert {p.split()[0].rstrip(":") for p in release.gate_failures(exported_, gate)} == missed
    props = r.promoted_model(gate=gate, **exported_)
    assert {re.search(r"metrics\.(\w+)", m)[1] for m in policy.model_meets_gate(MODEL, props)} == missed  # type: ignore[index]


def test_the_table_matches_the_recipe():
    assert set(gate_table.TASKS) == set(get_args(Task)) - {"auto"}
    thresholds = {k for k, v in GateSpec().model_dump().items() if isinstance(v, float)}
    assert set(gate_table.DEFAULTS) == thresholds == {c.gate for c in gate_table.CHECKS}
    assert all(getattr(GateSpec(), key) == value for key, value in gate_table.DEFAULTS.items())
    assert set(gate_table.CHECKS) == {c for checks in gate_table.TASKS.values() for c in checks}
