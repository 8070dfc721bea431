"""Running the source and the optimized model over a held-out set, batch-first
(optimize.fidelity compares them and gates)."""

from __future__ import annotations

from typing import Any

import numpy as np

from optimize.data import Dataset
from optimize.errors import OptimizeError

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
