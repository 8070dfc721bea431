"""Validation of the optimized model against the original on a held-out set,
and the accuracy gate."""

from __future__ import annotations

from typing import Any

import numpy as np

from optimize.data import Dataset
from optimize.errors import GateFailed, OptimizeError
from optimize.recipe import GateSpec

BATCH = 64


def predict(run: Any, data: Dataset, batch_axis: int = 0) -> np.ndarray:
    """First output over the whole set, in batches (bounded memory), joined along the output's own batch
    axis and returned batch-first (a time-major [T, batch, C] output comes back as [batch, T, C])."""
    parts = [run(*data.rows(i, i + BATCH).values()) for i in range(0, len(data), BATCH)]
    joined = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=batch_axis)
    return np.moveaxis(joined, batch_axis, 0)


def batch_axis(run: Any, example: dict[str, np.ndarray]) -> int:
    """The axis of the first output that follows the batch: the one whose size goes from 1 to 2 when the
    model sees one row and then two (exporters and layouts differ; the model's own answer does not)."""
    first = [v[:1] for v in example.values()]
    one = np.asarray(run(*first))
    two = np.asarray(run(*(np.concatenate([f, f]) for f in first)))  # any data, even of one row
    if one.ndim != two.ndim:
        raise OptimizeError(f"the model's output rank changes with the batch size ({one.shape} for 1 row, "
                            f"{two.shape} for 2); it needs an output with a batch axis")
    axes = [a for a in range(one.ndim) if (one.shape[a], two.shape[a]) == (1, 2)]
    if len(axes) != 1:
        raise OptimizeError(f"cannot tell the batch axis of the model's output: {one.shape} for 1 row, "
                            f"{two.shape} for 2 rows; it needs exactly one axis that follows the batch")
    return axes[0]


def check_labels(logits: np.ndarray, data: Dataset) -> None:
    """Fail fast when the model's output cannot be scored against the labels."""
    if data.labels is None:
        return
    top = int(data.labels.max()) if len(data.labels) else -1
    if logits.ndim != 2 or logits.shape[1] <= top:
        raise OptimizeError(
            f"model output shape {tuple(logits.shape)} does not match the validation labels "
            f"(expected (batch, classes) with classes > {top}, the largest label in '{data.path}')"
        )
    if int(data.labels.min()) < 0:
        raise OptimizeError(f"validation labels in '{data.path}' must be >= 0")


def compare(baseline: np.ndarray, optimized: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    if baseline.shape != optimized.shape:
        raise OptimizeError(
            f"optimized model output shape {optimized.shape} differs from the source's {baseline.shape}"
        )
    flat_b = baseline.reshape(len(baseline), -1)
    flat_o = optimized.reshape(len(optimized), -1)
    # Agreement along the class axis (the last): per row for [batch, C], per step for [batch, T, C].
    steps_b, steps_o = baseline.argmax(-1), optimized.argmax(-1)
    arg_b, arg_o = flat_b.argmax(1), flat_o.argmax(1)
    diff = np.abs(flat_b - flat_o)
    scale = np.maximum(np.abs(flat_b), 1e-6)
    result: dict[str, Any] = {
        "samples": len(baseline),
        "agreement": float((steps_b == steps_o).mean()),
        "agreement_over": "rows" if baseline.ndim <= 2 else "steps",
        "max_abs_error": float(diff.max()),
        "mean_rel_error": float((diff / scale).mean()),
        "baseline": None,
        "optimized": None,
        "delta": None,
    }
    if labels is not None:
        base_acc = float((arg_b == labels).mean())
        opt_acc = float((arg_o == labels).mean())
        result.update(baseline=base_acc, optimized=opt_acc, delta=opt_acc - base_acc)
    return result


def gate(acc: dict[str, Any], spec: GateSpec) -> None:
    """Raise GateFailed naming every missed threshold."""
    problems = []
    if acc["delta"] is not None and -acc["delta"] > spec.max_accuracy_drop + 1e-12:
        problems.append(
            f"top-1 accuracy dropped {-acc['delta'] * 100:.2f} points "
            f"({acc['baseline']:.4f} -> {acc['optimized']:.4f}), "
            f"gate.max_accuracy_drop allows {spec.max_accuracy_drop * 100:.2f}"
        )
    if acc["agreement"] < spec.min_agreement:
        problems.append(f"argmax agreement {acc['agreement']:.4f} is below gate.min_agreement {spec.min_agreement:.4f}")
    if problems:
        raise GateFailed("accuracy gate failed: " + "; ".join(problems) + "; nothing was published")
