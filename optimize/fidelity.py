"""How close the optimized model stays to its source, measured the way the task needs.

Every build measures all of the figures (they are cheap) and gates on the ones that fit the task:

- classification: argmax agreement per row, and the top-1 drop when labels are given, with its
  paired standard error (a drop smaller than the set can resolve is said to be so);
- sequence ([batch, T, C]): argmax agreement per step along the class axis;
- embedding: cosine similarity to the source, mean and worst row;
- regression: relative error ||optimized - source|| / ||source|| over the set.

The task is the gate's `task`, or inferred when it says "auto" (the rule, first match wins):
labels given -> classification; an output of rank 3 or more -> sequence; a single value per row ->
regression; every source row of unit L2 norm (a normalised embedding) -> embedding; otherwise
classification. An embedding that is not normalised has to be named: `gate.task: embedding`.

A model with several outputs is judged on each of them (the build passes only if every output
does): each output's task is inferred on its own, or named per output (`gate.task: {output_0:
classification, output_1: regression}`); labels score the first output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optimize.errors import GateFailed, OptimizeError
from optimize.recipe import GateSpec

UNIT_NORM_TOLERANCE = 1e-3
Z_95 = 1.96


def infer_task(baseline: np.ndarray, labels: np.ndarray | None, stated: str) -> tuple[str, str]:
    """(task, why) for a batch-first source output."""
    if stated != "auto":
        return stated, "stated in the recipe (gate.task)"
    if labels is not None:
        return "classification", "inferred: the validation data has labels"
    if baseline.ndim >= 3:
        return "sequence", f"inferred: the output has rank {baseline.ndim} ([batch, steps, classes])"
    if baseline.ndim == 1 or baseline.shape[-1] == 1:
        return "regression", "inferred: one value per row"
    norms = np.linalg.norm(baseline.reshape(len(baseline), -1), axis=1)
    if np.all(np.abs(norms - 1.0) < UNIT_NORM_TOLERANCE):
        return "embedding", "inferred: every output row has unit L2 norm"
    return "classification", "inferred: one score per class (the default)"


def measure(baseline: np.ndarray, optimized: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Every figure, for batch-first outputs of the same shape."""
    if baseline.shape != optimized.shape:
        raise OptimizeError(
            f"optimized model output shape {optimized.shape} differs from the source's {baseline.shape}"
        )
    flat_b = baseline.reshape(len(baseline), -1).astype(np.float64)
    flat_o = optimized.reshape(len(optimized), -1).astype(np.float64)
    # Agreement along the class axis (the last): per row for [batch, C], per step for [batch, T, C].
    diff = np.abs(flat_b - flat_o)
    cosine = _cosine(flat_b, flat_o)
    result: dict[str, Any] = {
        "samples": len(baseline),
        "agreement": float((baseline.argmax(-1) == optimized.argmax(-1)).mean()),
        "agreement_over": "rows" if baseline.ndim <= 2 else "steps",
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
    if labels is not None:
        right_b, right_o = flat_b.argmax(1) == labels, flat_o.argmax(1) == labels
        result.update(
            baseline=float(right_b.mean()),
            optimized=float(right_o.mean()),
            delta=float(right_o.mean() - right_b.mean()),
            delta_stderr=_paired_stderr(right_b, right_o),
        )
    return result


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


def checks(acc: dict[str, Any], task: str, spec: GateSpec) -> list[dict[str, Any]]:
    """The gate's checks for the task: [{metric, value, threshold, kind (min|max), passed}]."""
    wanted: list[tuple[str, float, str]] = []
    if task in ("classification", "sequence"):
        wanted.append(("agreement", spec.min_agreement, "min"))
        if acc.get("delta") is not None:
            wanted.append(("top1_drop", spec.max_accuracy_drop, "max"))
    elif task == "embedding":
        wanted += [("cosine_mean", spec.min_cosine, "min"), ("cosine_min", spec.min_cosine_worst, "min")]
    elif task == "regression":
        wanted.append(("relative_error", spec.max_relative_error, "max"))
    out = []
    for metric, threshold, kind in wanted:
        value = -acc["delta"] if metric == "top1_drop" else acc[metric]
        passed = value >= threshold if kind == "min" else value <= threshold + 1e-12
        out.append({"metric": metric, "value": float(value), "threshold": threshold, "kind": kind,
                    "passed": bool(passed)})  # fmt: skip
    return out


def assess(acc: dict[str, Any], baseline: np.ndarray, labels: np.ndarray | None, spec: GateSpec,
           stated: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One output's task, why, and the gate's checks with their figures (stated: its task, else gate.task)."""
    task, why = infer_task(baseline, labels, stated or _one_task(spec))
    return {"task": task, "task_reason": why, "checks": checks(acc, task, spec), "note": _drop_note(acc)}


def judge(baselines: list[np.ndarray], optimized: list[np.ndarray], names: list[str], labels: np.ndarray | None,
          spec: GateSpec) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(accuracy, fidelity) for report.json over every output: `accuracy` holds the first output's figures,
    `fidelity` its task, why and note, the checks of every output (each naming its output) and
    `outputs`, each output's task."""
    stated = _stated_tasks(spec, names)
    if not names:
        raise OptimizeError("the model has no outputs to validate")
    first: dict[str, Any] = {}
    result: dict[str, Any] = {}
    all_checks, outputs = [], []
    for k, (name, base, opt) in enumerate(zip(names, baselines, optimized, strict=True)):
        acc = measure(base, opt, labels if k == 0 else None)
        one = assess(acc, base, labels if k == 0 else None, spec, stated.get(name))
        all_checks += [{"output": name, **c, "label": label(c["metric"], acc)} for c in one["checks"]]
        outputs.append({"name": name, "task": one["task"], "task_reason": one["task_reason"]})
        if k == 0:
            first, result = acc, one
    return first, {**result, "checks": all_checks, "outputs": outputs}


def _one_task(spec: GateSpec) -> str:
    return spec.task if isinstance(spec.task, str) else "auto"


def _stated_tasks(spec: GateSpec, names: list[str]) -> dict[str, str]:
    """gate.task per output name: one task for all, or a mapping that must name outputs the model has."""
    if isinstance(spec.task, str):
        return {n: spec.task for n in names}
    unknown = sorted(set(spec.task) - set(names))
    if unknown:
        raise OptimizeError(f"gate.task names output(s) {unknown} the model does not have; its outputs are "
                            f"{names} (as in report.json `outputs`)")  # fmt: skip
    return dict(spec.task)


def check_name(check: dict[str, Any], several: bool) -> str:
    """A check's key in tables: its metric, prefixed by its output when the model has several."""
    return f"{check['output']}.{check['metric']}" if several and "output" in check else check["metric"]


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


LABELS = {
    "agreement": "argmax agreement",
    "top1_drop": "top-1 drop",
    "cosine_mean": "mean cosine similarity",
    "cosine_min": "worst-row cosine similarity",
    "relative_error": "relative error",
}
GATE_FIELDS = {
    "agreement": "gate.min_agreement",
    "top1_drop": "gate.max_accuracy_drop",
    "cosine_mean": "gate.min_cosine",
    "cosine_min": "gate.min_cosine_worst",
    "relative_error": "gate.max_relative_error",
}


def label(metric: str, acc: dict[str, Any] | None = None) -> str:
    """A figure's name for people; agreement over a sequence is per step."""
    if metric == "agreement" and acc is not None and acc.get("agreement_over") == "steps":
        return "per-step argmax agreement"
    return LABELS[metric]


def enforce(fidelity: dict[str, Any], acc: dict[str, Any]) -> None:
    """Raise GateFailed naming every missed check and the gate field that sets it."""
    problems = []
    several = len(fidelity.get("outputs", ())) > 1
    for check in fidelity["checks"]:
        if check["passed"]:
            continue
        relation = "is below" if check["kind"] == "min" else "is above"
        where = f"{check['output']}: " if several else ""
        if check["metric"] == "top1_drop":
            problems.append(
                f"{where}top-1 accuracy dropped {check['value'] * 100:.2f} points "
                f"({acc['baseline']:.4f} -> {acc['optimized']:.4f}, +/-{Z_95 * acc['delta_stderr'] * 100:.2f} "
                f"at 95% over {acc['samples']} rows), gate.max_accuracy_drop allows {check['threshold'] * 100:.2f}"
            )
        else:
            name = check.get("label") or label(check["metric"], acc)
            problems.append(f"{where}{name} {check['value']:.4f} {relation} "
                            f"{GATE_FIELDS[check['metric']]} {check['threshold']:.4f}")  # fmt: skip
    if problems:
        tasks = sorted({o["task"] for o in fidelity.get("outputs", ())} - {fidelity["task"]})
        task = f" ({', '.join([fidelity['task'], *tasks])} model)"
        raise GateFailed("accuracy gate failed: " + "; ".join(problems) + task + "; nothing was published")
