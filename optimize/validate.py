"""Running the source and the optimized model over a held-out set, batch-first
(optimize.fidelity compares them and gates). Runners here return every output."""

from __future__ import annotations

from typing import Any

import numpy as np

from optimize.data import Dataset
from optimize.errors import OptimizeError

BATCH = 64


def predict(run: Any, data: Dataset, batch_axes: list[int]) -> list[np.ndarray]:
    """Every output over the whole set, in batches (bounded memory), each joined along its own batch axis
    and returned batch-first (a time-major [T, batch, C] output comes back as [batch, T, C])."""
    parts = [run(*data.rows(i, i + BATCH).values()) for i in range(0, len(data), BATCH)]
    joined = []
    for k, axis in enumerate(batch_axes):
        whole = np.concatenate([np.asarray(p[k], dtype=np.float32) for p in parts], axis=axis)
        joined.append(np.moveaxis(whole, axis, 0))
    return joined


def batch_axes(run: Any, example: dict[str, np.ndarray]) -> list[int]:
    """For each output, the axis that follows the batch: the one whose size goes from 1 to 2 when the
    model sees one row and then two (exporters and layouts differ; the model's own answer does not)."""
    first = [v[:1] for v in example.values()]
    ones = run(*first)
    twos = run(*(np.concatenate([f, f]) for f in first))  # any data, even of one row
    several = len(ones) > 1
    axes = []
    for k, (one, two) in enumerate(zip(ones, twos, strict=True)):
        which = f"output {k} (of {len(ones)})" if several else "the model's output"
        one, two = np.asarray(one), np.asarray(two)
        if one.ndim != two.ndim:
            raise OptimizeError(f"the rank of {which} changes with the batch size ({one.shape} for 1 row, "
                                f"{two.shape} for 2); every output needs a batch axis")  # fmt: skip
        found = [a for a in range(one.ndim) if (one.shape[a], two.shape[a]) == (1, 2)]
        if len(found) != 1:
            raise OptimizeError(f"cannot tell the batch axis of {which}: {one.shape} for 1 row, {two.shape} "
                                "for 2 rows; it needs exactly one axis that follows the batch")  # fmt: skip
        axes.append(found[0])
    return axes


def check_labels(logits: np.ndarray, data: Dataset) -> None:
    """Fail fast when the model's (first) output cannot be scored against the labels: one class per row
    needs [batch, classes], a label sequence per row (padded with -1) [batch, steps, classes]."""
    if data.labels is None:
        return
    labels = data.labels
    real = labels[labels >= 0] if labels.ndim == 2 else labels
    top = int(real.max()) if real.size else -1
    want = labels.ndim + 1
    if logits.ndim != want or logits.shape[-1] <= top:
        shape = "(batch, classes)" if want == 2 else "(batch, steps, classes)"
        raise OptimizeError(
            f"model output shape {tuple(logits.shape)} does not match the validation labels "
            f"(expected {shape} with classes > {top}, the largest label in '{data.path}')"
        )
    if labels.ndim == 1 and int(labels.min()) < 0:
        raise OptimizeError(f"validation labels in '{data.path}' must be >= 0")
    if labels.ndim == 2 and int(labels.min()) < -1:
        raise OptimizeError(f"validation label sequences in '{data.path}' must be >= 0, padded with -1")
