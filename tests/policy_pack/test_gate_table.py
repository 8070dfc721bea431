"""One gate, three judges: the build (optimize/fidelity.py), a promotion's source check
(components/release.py) and the policy pack (policy/rules/model.py, which cannot import optimize:
no numpy in its venv). Each keeps its own table of task -> figures; these tests hold them to the
same verdicts, so they cannot drift apart."""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any, get_args

import pytest

from artifacts.build import _outputs
from components import release
from optimize import fidelity
from optimize.recipe import GateSpec, Task
from policy.rules import model as policy
from tests.policy_pack import resources as r

MODEL = "pulumi-python:dynamic:Resource"
GATES = {
    "defaults": {},
    "strict": {"min_agreement": 0.999, "max_accuracy_drop": 0.0, "min_cosine": 0.999, "min_cosine_worst": 0.99,
               "max_relative_error": 0.01},
    "loose": {"min_agreement": 0.5, "max_accuracy_drop": 0.5, "min_cosine": 0.5, "min_cosine_worst": 0.0,
              "max_relative_error": 1.0},
}
# Values on, just inside and just outside each threshold above, and far from all of them.
AGREEMENT = (0.3, 0.5, 0.989, 0.99, 0.999, 1.0)
DELTA = (None, 0.02, 0.0, -0.01, -0.0100001, -0.3)
COSINE_MEAN = (0.4, 0.5, 0.989, 0.99, 0.999, 1.0)
COSINE_MIN = (-0.2, 0.0, 0.949, 0.95, 0.99)
RELATIVE_ERROR = (0.0, 0.01, 0.05, 0.0500001, 1.0, 1.5)
TASKS = ("classification", "sequence", "embedding", "regression")


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for task, gate in itertools.product(TASKS, GATES):
        for agreement, delta, mean, worst, rel in itertools.product(AGREEMENT, DELTA, COSINE_MEAN, COSINE_MIN,
                                                                    RELATIVE_ERROR):
            acc = {"agreement": agreement, "delta": delta, "cosine_mean": mean, "cosine_min": worst,
                   "relative_error": rel}
            out.append((task, gate, acc))
    return out


@functools.cache
def spec_for(task: str, gate_name: str) -> GateSpec:
    return GateSpec(task=task, **GATES[gate_name])  # type: ignore[arg-type]


def build_verdict(task: str, gate_name: str, acc: dict[str, Any]) -> set[str]:
    """The gate keys the build misses (optimize/fidelity.py)."""
    spec = spec_for(task, gate_name)
    return {fidelity.GATE_FIELDS[c["metric"]].removeprefix("gate.")
            for c in fidelity.checks(acc, task, spec) if not c["passed"]}


def exported(task: str, acc: dict[str, Any]) -> dict[str, Any]:
    """The figures as the build exports them (artifacts/build.py), as a stack promoting it reads them."""
    report = {"digest": "cd" * 32, "accuracy": acc, "fidelity": {"task": task}}
    outs = _outputs({}, report, "file://store/" + "cd" * 32, "ab" * 32, cache_hit=False)
    return {key: outs[key] for key in (*release.FIGURES, *release.TASK_FIGURES, "task")}


def release_verdict(figures: dict[str, Any], gate: dict[str, float]) -> set[str]:
    phrases = release.gate_failures(figures, {**GateSpec().model_dump(), **gate})
    return {re.findall(r"\b((?:min|max)_\w+)", p)[0] for p in phrases}


def policy_verdict(figures: dict[str, Any], gate: dict[str, float]) -> set[str]:
    props = r.promoted_model(gate={**GateSpec().model_dump(), **gate})
    props["figures"] = figures
    return {re.search(r"this stack's gate (\w+)", m)[1]  # type: ignore[index]
            for m in policy.model_meets_gate(MODEL, props)}


def test_the_three_judges_give_the_same_verdicts():
    seen_pass = seen_fail = 0
    disagree = []
    for task, gate_name, acc in cases():
        gate = GATES[gate_name]
        expected = build_verdict(task, gate_name, acc)
        figures = exported(task, acc)
        got = (release_verdict(figures, gate), policy_verdict(figures, gate))
        if got != (expected, expected):
            disagree.append((task, gate_name, acc, expected, *got))
        seen_pass += not expected
        seen_fail += bool(expected)
    assert not disagree, f"{len(disagree)} cases disagree, e.g. {disagree[:3]}"
    assert seen_pass > 1000 and seen_fail > 1000  # the grid covers both verdicts


@pytest.mark.parametrize("task", TASKS)
def test_each_task_judges_the_figures_fidelity_checks(task):
    acc = {"agreement": 0.9, "delta": -0.1, "cosine_mean": 0.9, "cosine_min": 0.9, "relative_error": 0.9}
    metrics = {c["metric"] for c in fidelity.checks(acc, task, GateSpec(task=task))}
    keys = {"agreement": "agreement", "top1_drop": "accuracyDelta", "cosine_mean": "cosineMean",
            "cosine_min": "cosineMin", "relative_error": "relativeError"}
    assert {keys[m] for m in metrics} == {key for key, _, _ in policy.GATE_CHECKS[task]}


def test_the_tables_and_defaults_match_the_recipe():
    assert release.GATE_CHECKS == policy.GATE_CHECKS
    assert set(policy.GATE_CHECKS) == set(get_args(Task)) - {"auto"}
    defaults = {k: v for k, v in GateSpec().model_dump().items() if k != "task"}
    assert policy.GATE_DEFAULTS == defaults == release.GATE_DEFAULTS
    assert {gate_key for checks in policy.GATE_CHECKS.values() for _, gate_key, _ in checks} == set(defaults)
    assert policy.TOLERANCE == release.TOLERANCE and policy.LEGACY_TASK == release.LEGACY_TASK
