"""Dynamic sequence length, where the data shows it (export.dynamic_sequence: auto).

The data shows it when an input is a padding mask: 0/1 rows of ones then zeros (or zeros then ones)
of different lengths, as a tokenizer pads a batch; or when the validation and calibration data differ
in an input's second dimension. Axis 1 of every input of that length is then exported as one dynamic
`sequence` dimension, and the fp32 export is checked against the source on the data cut to half its
length. Where that fails, `auto` exports the data's length and the report says why; `true` fails the
build instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from optimize.errors import OptimizeError
from optimize.sources import _first

AXIS = 1
CHECK_ROWS = 16
# fp32 against fp32: only reassociation (and fused attention) apart.
MAX_RELATIVE_ERROR = 1e-3


@dataclass(frozen=True)
class SequenceAxes:
    inputs: tuple[str, ...]  # the inputs whose axis 1 follows the sequence
    length: int  # the data's length
    evidence: str  # what in the data shows it
    dynamic: bool | None = None  # None until an export decides
    reason: str | None = None  # why it stayed static

    def refused(self, why: str) -> SequenceAxes:
        return replace(self, dynamic=False, reason=why)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "length": self.length, "evidence": self.evidence,
                "dynamic": bool(self.dynamic), "checked_at": check_length(self.length) if self.dynamic else None,
                "reason": self.reason}  # fmt: skip


def find(data: dict[str, np.ndarray], other: dict[str, np.ndarray] | None = None) -> SequenceAxes | None:
    """The sequence axes the data shows (`data` sets the length; `other` is the second data set), or None."""
    evidence, length = None, None
    for name, a in data.items():
        rows = _padding_lengths(a)
        if rows is not None:
            evidence = f"'{name}' is a padding mask (rows of {rows.min()}-{rows.max()} of {a.shape[AXIS]})"
            length = a.shape[AXIS]
            break
    if evidence is None and other:
        for name, a in data.items():
            b = other.get(name)
            if b is not None and a.ndim >= 2 and b.ndim == a.ndim and a.shape[AXIS] != b.shape[AXIS]:
                evidence = f"'{name}' has {a.shape[AXIS]} steps in the validation data, {b.shape[AXIS]} in calibration"
                length = a.shape[AXIS]
                break
    if evidence is None or length is None:
        return None
    inputs = tuple(n for n, a in data.items() if a.ndim >= 2 and a.shape[AXIS] == length)
    return SequenceAxes(inputs, int(length), evidence)


def _padding_lengths(a: np.ndarray) -> np.ndarray | None:
    """Each row's count of ones when `a` is a padding mask of rows of different lengths, else None."""
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 2 or not (a.dtype == np.bool_ or a.dtype.kind in "iu"):
        return None
    if not np.isin(a, (0, 1)).all():
        return None
    steps = np.diff(a.astype(np.int8), axis=1)
    right, left = (steps <= 0).all(axis=1), (steps >= 0).all(axis=1)  # ones then zeros, or zeros then ones
    if not (right.all() or left.all()):
        return None
    lengths = a.sum(axis=1)
    return lengths if lengths.min() != lengths.max() else None


def check_length(length: int) -> int:
    return max(1, length // 2)


def cut(feeds: dict[str, np.ndarray], axes: SequenceAxes) -> dict[str, np.ndarray]:
    """The feeds with every sequence axis cut to the check length."""
    keep = check_length(axes.length)
    return {n: np.ascontiguousarray(a[:, :keep]) if n in axes.inputs else a for n, a in feeds.items()}


def verify(run_source: Any, run_export: Any, feeds: dict[str, np.ndarray], axes: SequenceAxes) -> None:
    """The export takes a shorter sequence and gives the source's outputs for it (else OptimizeError)."""
    short = cut(feeds, axes)
    try:
        got = run_export(*short.values())
    except Exception as exc:
        raise OptimizeError(f"the exported graph rejects {check_length(axes.length)} steps: {_first(exc)}") from None
    want = run_source(*short.values())
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            raise OptimizeError(f"at {check_length(axes.length)} steps output {k} has shape {list(g.shape)}, the "
                                f"source's {list(w.shape)}")  # fmt: skip
        error = float(np.linalg.norm(g - w)) / max(float(np.linalg.norm(w)), 1e-12)
        if error > MAX_RELATIVE_ERROR:
            raise OptimizeError(f"at {check_length(axes.length)} steps output {k} differs from the source's "
                                f"(relative error {error:.2g}): the export fixed the length somewhere")  # fmt: skip

