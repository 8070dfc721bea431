"""Fidelity per task: which figures a build is gated on, inferred or stated, and how a miss reads."""

from __future__ import annotations

import numpy as np
import pytest

from optimize import fidelity
from optimize.errors import GateFailed, OptimizeError
from optimize.recipe import GateSpec


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


LOGITS = np.random.default_rng(3).standard_normal((8, 10)).astype(np.float32) * 4
STEPS = np.random.default_rng(4).standard_normal((8, 12, 10)).astype(np.float32) * 4


@pytest.mark.parametrize(
    ("output", "labels", "task"),
    [
        (LOGITS, np.zeros(8, np.int64), "classification"),  # labels win over the shape
        (softmax(LOGITS), None, "classification"),  # rows of probabilities
        (np.log(softmax(LOGITS)), None, "classification"),  # log_softmax
        (LOGITS, None, "closeness"),  # scores, box offsets, landmarks: nothing shows they are classes
        (softmax(STEPS), None, "sequence"),
        (np.log(softmax(STEPS)), None, "sequence"),
        (STEPS, None, "closeness"),  # per-step logits (a CTC head): has to be named
        (np.zeros((8, 1)), None, "regression"),
        (np.zeros(8), None, "regression"),
        (unit_rows(8, 384), None, "embedding"),
        (unit_rows(8, 384) * 3, None, "closeness"),  # not normalised: has to be stated
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
        ("sequence", ["agreement", "sequence_exact"]),
        ("ctc", ["cer", "sequence_exact"]),
        ("embedding", ["cosine_mean", "cosine_min"]),
        ("regression", ["relative_error"]),
        ("closeness", ["relative_error", "cosine_min"]),
    ],
)
def test_each_task_is_gated_on_its_own_figures(task, metrics):
    acc = {"agreement": 0.5, "delta": -0.001 if task == "classification" else None, "cosine_mean": 0.995,
           "cosine_min": 0.97, "relative_error": 0.01, "sequence_exact": 0.2, "cer": 0.02,
           "cer_increase": None}  # fmt: skip
    checks = fidelity.checks(acc, task, GateSpec())
    assert [c["metric"] for c in checks] == metrics
    assert all(c["passed"] for c in checks) == (task in ("embedding", "regression", "closeness"))


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


def ctc_scores(paths: list[list[int]], classes: int = 6) -> np.ndarray:
    """One-hot [batch, T, classes] scores whose per-step argmax is the given path."""
    return np.eye(classes, dtype=np.float32)[np.array(paths)] * 5


def test_ctc_decoding_merges_repeats_and_drops_the_blank():
    scores = ctc_scores([[0, 1, 1, 0, 1, 2, 2, 0], [3, 3, 3, 0, 0, 0, 0, 4]])
    assert fidelity.ctc_decode(scores, blank=0) == [[1, 1, 2], [3, 4]]
    assert fidelity.ctc_decode(scores, blank=5) == [[0, 1, 0, 1, 2, 0], [3, 0, 4]]


def test_ctc_figures_judge_decoded_sequences_not_steps():
    source = ctc_scores([[0, 1, 0, 2, 0, 3, 0, 0]] * 10)  # "1 2 3" on every row
    candidate = source.copy()
    candidate[0, 2] = np.eye(6)[1] * 5  # a changed step that merges into the same text: no error
    candidate[1, 3] = np.eye(6)[0] * 5  # a dropped character: one edit in 30
    acc = fidelity.measure(source, candidate, None, "ctc", blank=0)
    assert acc["agreement"] == pytest.approx(78 / 80)
    assert acc["cer"] == pytest.approx(1 / 30) and acc["sequence_exact"] == pytest.approx(0.9)
    checks = {c["metric"]: c for c in fidelity.checks(acc, "ctc", GateSpec())}
    assert not checks["cer"]["passed"] and checks["cer"]["gate"] == "gate.max_cer"
    labels = np.array([[1, 2, 3]] * 9 + [[1, 2, -1]])  # sequence labels, padded with -1
    with_labels = fidelity.measure(source, candidate, labels, "ctc", blank=0)
    assert with_labels["cer_baseline"] == pytest.approx(1 / 29)  # the last row's extra "3"
    assert with_labels["cer_increase"] == pytest.approx(with_labels["cer_optimized"] - with_labels["cer_baseline"])
    assert [c["metric"] for c in fidelity.checks(with_labels, "ctc", GateSpec())] == ["cer", "sequence_exact",
                                                                                      "cer_increase"]


def test_a_whole_sequence_counts_once_any_of_its_steps_changes():
    base = softmax(STEPS)
    opt = base.copy()
    opt[:2, 0] = np.roll(opt[:2, 0], 1, axis=-1)  # one step in each of two of the eight sequences
    acc = fidelity.measure(base, opt, None)
    assert acc["sequence_exact"] == pytest.approx(6 / 8) and acc["agreement"] > 0.97


def test_a_missed_check_of_an_inferred_task_says_how_to_name_another():
    boxes = np.random.default_rng(5).normal(0, 0.2, (40, 4)).astype(np.float32)
    probs = softmax(LOGITS[:4].repeat(10, 0))
    names = ["output_0", "output_1"]
    _, result = fidelity.judge([boxes, probs], [boxes * 1.2, probs], names, None, GateSpec())
    assert [o["task"] for o in result["outputs"]] == ["closeness", "classification"]
    with pytest.raises(GateFailed) as failed:
        fidelity.enforce(result, {})
    message = str(failed.value)
    assert "output_0: relative error 0.2000 is above gate.max_relative_error 0.0500" in message
    assert "output_0 judged as closeness, inferred: no labels" in message
    assert "gate.task: {output_0: regression}" in message and "output_1" not in message.split("(")[0]
    named = GateSpec(task={"output_0": "regression"}, max_relative_error=0.25)
    fidelity.enforce(*reversed(fidelity.judge([boxes, probs], [boxes * 1.2, probs], names, None, named)))


def test_sequence_labels_need_a_ctc_output_and_ctc_needs_sequence_labels():
    scores = ctc_scores([[0, 1, 0, 2]] * 3)
    with pytest.raises(OptimizeError, match=r"labels 'y' are sequences .* name it: gate.task: \{output: ctc\}"):
        fidelity.plan_tasks([scores], ["output"], np.array([[1, 2]] * 3), GateSpec())
    with pytest.raises(OptimizeError, match=r"'output' is a ctc output, so its labels 'y' must be sequences"):
        fidelity.plan_tasks([scores], ["output"], np.array([1, 2, 0]), GateSpec(task="ctc"))
    assert fidelity.plan_tasks([scores], ["output"], np.array([[1, 2]] * 3), GateSpec(task="ctc"))[0][0] == "ctc"


METRIC = "tests.optimize.gate_metrics:max_abs_difference"


def test_a_recipe_metric_adds_its_figures_and_thresholds_to_the_gate():
    base = unit_rows(20, 8)
    spec = GateSpec(metric=METRIC, metric_thresholds={"max_abs": {"max": 0.05}})
    _, result = fidelity.judge([base], [base + 0.01], ["output"], None, spec)
    assert result["metric"] == {"function": METRIC, "figures": {"max_abs": pytest.approx(0.01, rel=1e-4)}}
    check = result["checks"][-1]
    assert check["metric"] == "metric.max_abs" and check["passed"]
    assert check["gate"] == "gate.metric_thresholds.max_abs.max"
    _, worse = fidelity.judge([base], [base + 0.1], ["output"], None, spec)
    with pytest.raises(GateFailed, match=r"max_abs \(tests\.optimize\.gate_metrics:max_abs_difference\) 0\.1000 is "
                                         r"above gate\.metric_thresholds\.max_abs\.max 0\.0500"):
        fidelity.enforce(worse, {})


@pytest.mark.parametrize(
    ("metric", "thresholds", "message"),
    [
        ("tests.optimize.no_such_module:f", {}, r"^gate\.metric module 'tests\.optimize\.no_such_module' cannot be "
                                                r"imported"),
        ("tests.optimize.gate_metrics:nothing", {}, r"'tests\.optimize\.gate_metrics' has no attribute 'nothing'"),
        ("tests.optimize.gate_metrics:NOT_CALLABLE", {}, r"is not callable$"),
        ("tests.optimize.gate_metrics:raises", {}, r"^gate\.metric 'tests\.optimize\.gate_metrics:raises' raised "
                                                   r"KeyError: 'output_7'$"),
        ("tests.optimize.gate_metrics:not_a_mapping", {}, r"returned list, not a mapping of figure names to numbers"),
        (METRIC, {"iou": {"min": 0.9}}, r"^gate\.metric_thresholds names \['iou'\], which gate\.metric .* does not "
                                        r"return \(it returns \['max_abs'\]\)$"),
    ],
)
def test_a_bad_recipe_metric_is_one_line_naming_it(metric, thresholds, message):
    spec = GateSpec(metric=metric, metric_thresholds=thresholds)
    outputs = {"output": unit_rows(4, 8)}
    with pytest.raises(OptimizeError, match=message):
        fidelity.metric_figures(spec, outputs, outputs, None)
