"""Fidelity per task: which figures a build is gated on, inferred or stated, and how a miss reads."""

from __future__ import annotations

import numpy as np
import pytest

from optimize import fidelity
from optimize.errors import GateFailed
from optimize.recipe import GateSpec


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("output", "labels", "task"),
    [
        (np.zeros((8, 10)), np.zeros(8, np.int64), "classification"),  # labels win over the shape
        (np.zeros((8, 12, 10)), None, "sequence"),
        (np.zeros((8, 1)), None, "regression"),
        (np.zeros(8), None, "regression"),
        (unit_rows(8, 384), None, "embedding"),
        (unit_rows(8, 384) * 3, None, "classification"),  # not normalised: has to be stated
    ],
)
def test_the_task_is_inferred_by_the_documented_rule(output, labels, task):
    inferred, why = fidelity.infer_task(output, labels, "auto")
    assert inferred == task and why.startswith("inferred: ")


def test_a_stated_task_is_taken_as_it_is():
    stated = fidelity.infer_task(unit_rows(4, 8), None, "regression")  # unit rows, yet not an embedding
    assert stated == ("regression", "stated in the recipe (gate.task)")


def test_agreement_is_per_step_along_the_class_axis():
    base = np.zeros((4, 3, 5), np.float32)
    base[..., 0] = 1.0
    opt = base.copy()
    opt[0, 0] = [0, 2, 0, 0, 0]  # one of 12 steps disagrees
    result = fidelity.measure(base, opt, None)
    assert result["agreement"] == pytest.approx(11 / 12) and result["agreement_over"] == "steps"
    assert fidelity.measure(base[:, 0], opt[:, 0], None)["agreement_over"] == "rows"


def test_cosine_sees_what_argmax_agreement_cannot():
    # An embedding nudged by noise: its argmax moves often, its direction hardly at all.
    base = unit_rows(200, 384)
    noisy = base + np.random.default_rng(1).normal(0, 0.004, base.shape).astype(np.float32)
    acc = fidelity.measure(base, noisy, None)
    assert acc["agreement"] < 0.95 and acc["cosine_mean"] > 0.99  # argmax gate: fail; cosine gate: pass
    assert acc["cosine_min"] <= acc["cosine_mean"]
    assert acc["relative_error"] == pytest.approx(np.linalg.norm(noisy - base) / np.linalg.norm(base), rel=1e-5)
    assert fidelity.measure(base, -base, None)["cosine_mean"] == pytest.approx(-1.0)
    zeros = np.zeros((2, 4), np.float32)
    assert fidelity.measure(zeros, zeros, None)["cosine_min"] == 1.0  # identical zero rows agree


def test_the_top1_drop_comes_with_its_paired_standard_error():
    labels = np.arange(400) % 4
    base = np.eye(4, dtype=np.float32)[labels]  # always right
    opt = base.copy()
    opt[:8] = np.roll(opt[:8], 1, axis=1)  # 8 of 400 rows now wrong: a 2-point drop
    acc = fidelity.measure(base, opt, labels)
    assert acc["delta"] == pytest.approx(-0.02)
    # 8 discordant rows of 400: sqrt(p(1-p)/n) with p = 0.02.
    assert acc["delta_stderr"] == pytest.approx(np.sqrt(0.02 * 0.98 / 400))
    note = fidelity.assess(acc, base, labels, GateSpec())["note"]
    assert "exceeds its sampling error" in note and "400 rows" in note
    one = fidelity.measure(base, np.vstack([np.roll(base[:1], 1, axis=1), base[1:]]), labels)
    assert "within its sampling error" in fidelity.assess(one, base, labels, GateSpec())["note"]


@pytest.mark.parametrize(
    ("task", "metrics"),
    [
        ("classification", ["agreement", "top1_drop"]),
        ("sequence", ["agreement"]),
        ("embedding", ["cosine_mean", "cosine_min"]),
        ("regression", ["relative_error"]),
    ],
)
def test_each_task_is_gated_on_its_own_figures(task, metrics):
    acc = {"agreement": 0.5, "delta": -0.001 if task == "classification" else None, "cosine_mean": 0.995,
           "cosine_min": 0.97, "relative_error": 0.01}  # fmt: skip
    checks = fidelity.checks(acc, task, GateSpec())
    assert [c["metric"] for c in checks] == metrics
    assert all(c["passed"] for c in checks) == (task in ("embedding", "regression"))


def test_a_missed_embedding_gate_names_the_figure_and_the_field():
    base = unit_rows(50, 16)
    worse = base + np.random.default_rng(2).normal(0, 0.2, base.shape).astype(np.float32)
    acc = fidelity.measure(base, worse, None)
    result = fidelity.assess(acc, base, None, GateSpec())
    assert result["task"] == "embedding"
    with pytest.raises(GateFailed, match=r"^accuracy gate failed: mean cosine similarity 0\.\d+ is below "
                                         r"gate\.min_cosine 0\.9900.*\(embedding model\); nothing was published$"):
        fidelity.enforce(result, acc)
    fidelity.enforce(fidelity.assess(acc, base, None, GateSpec(min_cosine=0.5, min_cosine_worst=0.5)), acc)


def test_a_regression_gate_reads_the_relative_error():
    base = np.linspace(1, 2, 40, dtype=np.float32)[:, None]
    acc = fidelity.measure(base, base * 1.1, None)
    result = fidelity.assess(acc, base, None, GateSpec(max_relative_error=0.05))
    assert result["task"] == "regression" and acc["relative_error"] == pytest.approx(0.1, rel=1e-4)
    with pytest.raises(GateFailed, match=r"relative error 0\.1000 is above gate\.max_relative_error 0\.0500"):
        fidelity.enforce(result, acc)
