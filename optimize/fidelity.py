"""How close the optimized model stays to its source, measured the way the task needs.

Every build measures the figures of each output's task and gates on them (the table of task ->
figures -> gate field is policy/rules/gate_table.py, shared with promotion and the policy pack):

- classification: argmax agreement per row, and the top-1 drop when labels are given, with its
  paired standard error (a drop smaller than the set can resolve is said to be so);
- sequence ([batch, T, C]): argmax agreement per step along the class axis, and the share of whole
  sequences whose every step is unchanged;
- ctc ([batch, T, C] trained with CTC): both models' outputs greedy-decoded (argmax per step, repeats
  merged, `gate.ctc_blank` dropped); the character error rate of the optimized sequences against the
  source's, the share of sequences decoded exactly alike, and with sequence labels (`y` of rank 2,
  padded with -1) each model's error rate against them;
- embedding: cosine similarity to the source, mean and worst row;
- regression: relative error ||optimized - source|| / ||source|| over the set;
- closeness, for an output whose task the data cannot show: relative error and the worst row's cosine.

The task is the gate's `task`, or inferred when it says "auto" (the rule, first match wins): labels
given -> classification (the first output); one value per row -> regression; an output of rank 3 or
more -> sequence when every step is a probability (or log-probability) distribution, else closeness;
every source row of unit L2 norm -> embedding; every row a probability (or log-probability)
distribution -> classification; otherwise closeness. Scores that are not normalised (logits, box
offsets, landmarks) do not show a task, so they are never judged by argmax unless named: `gate.task:
{output_0: classification}`. A ctc output has to be named (`gate.task: ctc`).

A model with several outputs is judged on each of them (the build passes only if every output
does): each output's task is inferred on its own, or named per output (`gate.task: {output_0:
classification, output_1: regression}`); labels score the first output. A recipe metric
(`gate.metric: module:function`) adds its own figures and thresholds over all outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from optimize.errors import GateFailed, OptimizeError
from optimize.recipe import GateSpec
from policy.rules.gate_table import TASKS, TOP1_DROP, Check

UNIT_NORM_TOLERANCE = 1e-3
DISTRIBUTION_TOLERANCE = 1e-3
Z_95 = 1.96
INFERRED = "inferred: "
PAD = -1  # what pads a row of sequence labels
# The task a failure's hint names as an example, for an output inferred as the key.
OTHER_TASK = {"closeness": "regression", "classification": "closeness", "sequence": "ctc", "embedding": "closeness",
              "regression": "closeness"}


def infer_task(baseline: np.ndarray, labels: np.ndarray | None, stated: str) -> tuple[str, str]:
    """(task, why) for a batch-first source output; why starts with INFERRED unless the recipe named it."""
    if stated != "auto":
        return stated, "stated in the recipe (gate.task)"
    if labels is not None:
        return "classification", INFERRED + "the validation data has labels"
    if baseline.ndim == 1 or (baseline.ndim == 2 and baseline.shape[-1] == 1):
        return "regression", INFERRED + "one value per row"
    kind = distribution(baseline)
    classes = baseline.shape[-1]
    if baseline.ndim >= 3:
        if kind:
            return "sequence", INFERRED + f"every step of the rank-{baseline.ndim} output is a {kind} distribution " \
                f"over {classes} classes"
        return "closeness", INFERRED + f"the rank-{baseline.ndim} output's steps are not probability distributions, " \
            "so nothing shows they are class scores"
    norms = np.linalg.norm(baseline.reshape(len(baseline), -1), axis=1)
    if np.all(np.abs(norms - 1.0) < UNIT_NORM_TOLERANCE):
        return "embedding", INFERRED + "every output row has unit L2 norm"
    if kind:
        return "classification", INFERRED + f"every row is a {kind} distribution over {classes} classes"
    return "closeness", INFERRED + "no labels, and the rows are neither probability distributions nor unit " \
        "vectors, so nothing shows they are class scores"


def distribution(scores: np.ndarray) -> str | None:
    """'probability' when every row (along the last axis) is non-negative and sums to 1, 'log-probability'
    when its exponentials do (log_softmax), else None."""
    s = scores.astype(np.float64)
    if (s >= -DISTRIBUTION_TOLERANCE).all() and np.allclose(s.sum(-1), 1.0, atol=DISTRIBUTION_TOLERANCE):
        return "probability"
    if (s <= DISTRIBUTION_TOLERANCE).all():
        top = s.max(-1, keepdims=True)
        logsumexp = top[..., 0] + np.log(np.exp(s - top).sum(-1))
        if np.allclose(logsumexp, 0.0, atol=DISTRIBUTION_TOLERANCE):
            return "log-probability"
    return None


def measure(baseline: np.ndarray, optimized: np.ndarray, labels: np.ndarray | None, task: str = "classification",
            blank: int = 0) -> dict[str, Any]:  # fmt: skip
    """Every figure of the task (and the task-agnostic ones), for batch-first outputs of the same shape."""
    if baseline.shape != optimized.shape:
        raise OptimizeError(
            f"optimized model output shape {optimized.shape} differs from the source's {baseline.shape}"
        )
    flat_b = baseline.reshape(len(baseline), -1).astype(np.float64)
    flat_o = optimized.reshape(len(optimized), -1).astype(np.float64)
    # Agreement along the class axis (the last): per row for [batch, C], per step for [batch, T, C].
    diff = np.abs(flat_b - flat_o)
    cosine = _cosine(flat_b, flat_o)
    same = baseline.argmax(-1) == optimized.argmax(-1)
    result: dict[str, Any] = {
        "samples": len(baseline),
        "agreement": float(same.mean()),
        "agreement_over": "rows" if baseline.ndim <= 2 else "steps",
        "sequence_exact": float(same.reshape(len(same), -1).all(1).mean()) if baseline.ndim >= 3 else None,
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "relative_error": float(np.linalg.norm(flat_b - flat_o)) / max(float(np.linalg.norm(flat_b)), 1e-12),
        "max_abs_error": float(diff.max()),
        "mean_rel_error": float((diff / np.maximum(np.abs(flat_b), 1e-6)).mean()),
        "baseline": None,
        "optimized": None,
        "delta": None,
        "delta_stderr": None,
    }
    if task == "ctc":
        result.update(_ctc_figures(baseline, optimized, labels, blank))
    elif labels is not None:
        right_b, right_o = flat_b.argmax(1) == labels, flat_o.argmax(1) == labels
        result.update(
            baseline=float(right_b.mean()),
            optimized=float(right_o.mean()),
            delta=float(right_o.mean() - right_b.mean()),
            delta_stderr=_paired_stderr(right_b, right_o),
        )
    return result


def ctc_decode(scores: np.ndarray, blank: int) -> list[list[int]]:
    """Greedy CTC decoding of [batch, T, C] scores: argmax per step, repeats merged, blanks dropped."""
    best = scores.reshape(len(scores), -1, scores.shape[-1]).argmax(-1)
    keep = np.concatenate([np.ones((len(best), 1), bool), best[:, 1:] != best[:, :-1]], axis=1) & (best != blank)
    return [row[k].tolist() for row, k in zip(best, keep, strict=True)]


def character_error_rate(hypotheses: list[list[int]], references: list[list[int]]) -> float:
    """Edit distance over the set / the references' length (insertions, deletions and substitutions)."""
    from rapidfuzz.distance import Levenshtein

    edits = sum(Levenshtein.distance(h, r) for h, r in zip(hypotheses, references, strict=True))
    return edits / max(sum(len(r) for r in references), 1)


def _ctc_figures(baseline: np.ndarray, optimized: np.ndarray, labels: np.ndarray | None,
                 blank: int) -> dict[str, Any]:  # fmt: skip
    if baseline.ndim != 3:
        raise OptimizeError(f"gate.task ctc needs a [batch, steps, classes] output; this one is {baseline.shape}")
    if not 0 <= blank < baseline.shape[-1]:
        raise OptimizeError(f"gate.ctc_blank {blank} is not a class of the output ({baseline.shape[-1]} classes)")
    source, candidate = ctc_decode(baseline, blank), ctc_decode(optimized, blank)
    figures: dict[str, Any] = {
        "cer": character_error_rate(candidate, source),
        "sequence_exact": float(np.mean([c == s for c, s in zip(candidate, source, strict=True)])),
        "cer_baseline": None,
        "cer_optimized": None,
        "cer_increase": None,
    }
    if labels is not None:
        truth = [row[row != PAD].tolist() for row in labels]
        b, o = character_error_rate(source, truth), character_error_rate(candidate, truth)
        figures.update(cer_baseline=b, cer_optimized=o, cer_increase=o - b)
    return figures


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(1)
    # Two zero rows are the same row; one zero row against a non-zero one shares no direction.
    both_zero = norms == 0
    return np.where(both_zero, np.all(a == b, axis=1).astype(np.float64), dots / np.where(both_zero, 1, norms))


def _paired_stderr(right_b: np.ndarray, right_o: np.ndarray) -> float:
    """Standard error of the top-1 difference between two models scored on the same rows (the
    discordant pairs carry it, as in McNemar's test): the size of drop this set can resolve."""
    n = len(right_b)
    d = right_o.astype(np.float64) - right_b.astype(np.float64)
    return float(math.sqrt(max(float((d**2).mean() - d.mean() ** 2), 0.0) / n)) if n > 1 else 0.0


def metric_name(check: Check) -> str:
    """A check's name in report.json: its figure, but the top-1 drop for minus the accuracy delta."""
    return "top1_drop" if check is TOP1_DROP else check.figure


def checks(acc: dict[str, Any], task: str, spec: GateSpec) -> list[dict[str, Any]]:
    """The gate's checks for the task: [{metric, value, threshold, kind (min|max), passed, label, gate}]."""
    out = []
    for check in TASKS[task]:
        figure = acc.get(check.figure)
        if figure is None:
            if check.optional:
                continue
            raise OptimizeError(f"the build measured no {check.label} for a {task} output")
        value, threshold = check.value(figure), float(getattr(spec, check.gate))
        out.append({"metric": metric_name(check), "value": float(value), "threshold": threshold,
                    "kind": check.kind, "passed": check.passes(value, threshold), "label": _label(check, acc),
                    "gate": f"gate.{check.gate}"})  # fmt: skip
    return out


def _label(check: Check, acc: dict[str, Any]) -> str:
    if check.figure == "agreement" and acc.get("agreement_over") == "steps":
        return "per-step argmax agreement"
    return check.label


def label(metric: str, acc: dict[str, Any] | None = None) -> str:
    """A figure's name for people (a report without a check's own label)."""
    for checks_ in TASKS.values():
        for check in checks_:
            if metric_name(check) == metric:
                return _label(check, acc or {})
    return metric


def assess(acc: dict[str, Any], baseline: np.ndarray, labels: np.ndarray | None, spec: GateSpec,
           stated: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One output's task (stated: its task, else gate.task, else inferred), why, and the gate's checks."""
    return _assessed(acc, *infer_task(baseline, labels, stated or _one_task(spec)), spec)


def _assessed(acc: dict[str, Any], task: str, why: str, spec: GateSpec) -> dict[str, Any]:
    return {"task": task, "task_reason": why, "checks": checks(acc, task, spec), "note": _drop_note(acc)}


def _one_task(spec: GateSpec) -> str:
    return spec.task if isinstance(spec.task, str) else "auto"


def judge(baselines: list[np.ndarray], optimized: list[np.ndarray], names: list[str], labels: np.ndarray | None,
          spec: GateSpec) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(accuracy, fidelity) for report.json over every output: `accuracy` holds the first output's figures,
    `fidelity` its task, why and note, the checks of every output (each naming its output), `outputs`
    (each output's task and why) and `metric` (the recipe metric's figures, when it names one)."""
    if not names:
        raise OptimizeError("the model has no outputs to validate")
    tasks = plan_tasks(baselines, names, labels, spec)
    first: dict[str, Any] = {}
    result: dict[str, Any] = {}
    all_checks, outputs = [], []
    for k, (name, base, opt) in enumerate(zip(names, baselines, optimized, strict=True)):
        task, why = tasks[k]
        acc = measure(base, opt, labels if k == 0 else None, task, spec.ctc_blank)
        one = _assessed(acc, task, why, spec)
        all_checks += [{"output": name, **c} for c in one["checks"]]
        outputs.append({"name": name, "task": task, "task_reason": why})
        if k == 0:
            first, result = acc, one
    metric = None
    if spec.metric:
        figures = metric_figures(spec, dict(zip(names, baselines, strict=True)),
                                 dict(zip(names, optimized, strict=True)), labels)  # fmt: skip
        all_checks += metric_checks(figures, spec)
        metric = {"function": spec.metric, "figures": figures}
    return first, {**result, "checks": all_checks, "outputs": outputs, "metric": metric}


def plan_tasks(baselines: list[np.ndarray], names: list[str], labels: np.ndarray | None,
               spec: GateSpec) -> list[tuple[str, str]]:  # fmt: skip
    """(task, why) per output; labels score the first output, and sequence labels need a ctc one."""
    stated = _stated_tasks(spec, names)
    out = []
    for k, (name, base) in enumerate(zip(names, baselines, strict=True)):
        given = labels if k == 0 else None
        task, why = infer_task(base, given if given is None or given.ndim == 1 else None, stated.get(name, "auto"))
        if k == 0 and labels is not None and labels.ndim == 2 and task != "ctc":
            raise OptimizeError(f"the validation labels 'y' are sequences (rank 2), which score a ctc output, but "
                                f"'{name}' is judged as {task}; name it: gate.task: {{{name}: ctc}}")  # fmt: skip
        if k == 0 and labels is not None and labels.ndim == 1 and task == "ctc":
            raise OptimizeError(f"'{name}' is a ctc output, so its labels 'y' must be sequences (rank 2, one row of "
                                f"class indices per row, padded with {PAD}), not one class per row")  # fmt: skip
        out.append((task, why))
    return out


def _stated_tasks(spec: GateSpec, names: list[str]) -> dict[str, str]:
    """gate.task per output name: one task for all, or a mapping that must name outputs the model has."""
    if isinstance(spec.task, str):
        return {n: spec.task for n in names}
    unknown = sorted(set(spec.task) - set(names))
    if unknown:
        raise OptimizeError(f"gate.task names output(s) {unknown} the model does not have; its outputs are "
                            f"{names} (as in report.json `outputs`)")  # fmt: skip
    return dict(spec.task)


def metric_figures(spec: GateSpec, source: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                   labels: np.ndarray | None) -> dict[str, float]:  # fmt: skip
    """The recipe metric's figures: function(source, candidate, labels) with each model's outputs by name;
    a metric that fails or returns something else than {name: number} is one line naming it."""
    from optimize.sources import load_callable

    assert spec.metric
    function = load_callable(spec.metric, "gate.metric")
    try:
        figures = function(source, candidate, labels)
    except Exception as exc:
        raise OptimizeError(f"gate.metric '{spec.metric}' raised {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None  # fmt: skip
    if not isinstance(figures, Mapping) or not figures:
        raise OptimizeError(f"gate.metric '{spec.metric}' returned {type(figures).__name__}, not a mapping of "
                            "figure names to numbers (e.g. {'mean_iou': 0.93})")  # fmt: skip
    out = {}
    for name, value in figures.items():
        number = float(value) if isinstance(value, int | float | np.number) and not isinstance(value, bool) else None
        if not isinstance(name, str) or number is None or not math.isfinite(number):
            raise OptimizeError(f"gate.metric '{spec.metric}' returned {name!r}: {value!r}; every figure must be "
                                "a finite number under a name")  # fmt: skip
        out[name] = number
    unknown = sorted(set(spec.metric_thresholds) - set(out))
    if unknown:
        raise OptimizeError(f"gate.metric_thresholds names {unknown}, which gate.metric '{spec.metric}' does not "
                            f"return (it returns {sorted(out)})")  # fmt: skip
    return out


def metric_checks(figures: dict[str, float], spec: GateSpec) -> list[dict[str, Any]]:
    out = []
    for name, bounds in sorted(spec.metric_thresholds.items()):
        for kind, threshold in (("min", bounds.min), ("max", bounds.max)):
            if threshold is None:
                continue
            value = figures[name]
            passed = value >= threshold - 1e-12 if kind == "min" else value <= threshold + 1e-12
            out.append({"output": None, "metric": f"metric.{name}", "value": value, "threshold": threshold,
                        "kind": kind, "passed": passed, "label": f"{name} ({spec.metric})",
                        "gate": f"gate.metric_thresholds.{name}.{kind}"})  # fmt: skip
    return out


def check_name(check: dict[str, Any], several: bool) -> str:
    """A check's key in tables: its metric, prefixed by its output when the model has several."""
    return f"{check['output']}.{check['metric']}" if several and check.get("output") else check["metric"]


def _drop_note(acc: dict[str, Any]) -> str | None:
    """Whether the top-1 change is larger than the validation set can resolve (95%, paired)."""
    delta, stderr = acc.get("delta"), acc.get("delta_stderr")
    if delta is None or stderr is None:
        return None
    if stderr == 0:
        return f"no row changed its top-1 answer ({acc['samples']} rows)"
    margin = Z_95 * stderr
    verdict = "is within" if abs(delta) <= margin else "exceeds"
    return (f"top-1 change {delta * 100:+.2f} points {verdict} its sampling error "
            f"(+/-{margin * 100:.2f} at 95%, paired, {acc['samples']} rows)")  # fmt: skip


def task_lines(fidelity: dict[str, Any]) -> list[str]:
    """Each output's task and why, as the build prints them."""
    return [f"{o['name']}: {o['task']} ({o['task_reason']})" for o in fidelity.get("outputs", ())]


def enforce(fidelity: dict[str, Any], acc: dict[str, Any]) -> None:
    """Raise GateFailed naming every missed check and the gate field that sets it; for an output whose
    task was inferred, how to name another."""
    problems = []
    outputs = {o["name"]: o for o in fidelity.get("outputs", ())}
    several = len(outputs) > 1
    hints: dict[str, str] = {}
    for check in fidelity["checks"]:
        if check["passed"]:
            continue
        relation = "is below" if check["kind"] == "min" else "is above"
        output = check.get("output")
        where = f"{output}: " if several and output else ""
        if check["metric"] == "top1_drop":
            problems.append(
                f"{where}top-1 accuracy dropped {check['value'] * 100:.2f} points "
                f"({acc['baseline']:.4f} -> {acc['optimized']:.4f}, +/-{Z_95 * acc['delta_stderr'] * 100:.2f} "
                f"at 95% over {acc['samples']} rows), gate.max_accuracy_drop allows {check['threshold'] * 100:.2f}"
            )
        else:
            name = check.get("label") or label(check["metric"], acc)
            problems.append(f"{where}{name} {check['value']:.4f} {relation} {check['gate']} {check['threshold']:.4f}")
        out = outputs.get(output) if output else None
        if out and out["task_reason"].startswith(INFERRED):
            hints[out["name"]] = (f"{out['name']} judged as {out['task']}, {out['task_reason']}; if it is another "
                                  f"task, name it in the recipe, e.g. gate.task: {{{out['name']}: "
                                  f"{OTHER_TASK[out['task']]}}} (one of {', '.join(TASKS)})")  # fmt: skip
    if problems:
        tasks = sorted({o["task"] for o in outputs.values()} - {fidelity["task"]})
        task = f" ({', '.join([fidelity['task'], *tasks])} model)"
        hint = f" ({'; '.join(hints.values())})" if hints else ""
        raise GateFailed("accuracy gate failed: " + "; ".join(problems) + task + hint + "; nothing was published")
