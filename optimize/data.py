"""Validation/calibration data: an .npz with the input under `x` (or one array
per model input name) and optional integer labels under `y`: one class per row,
or a label sequence per row (rank 2, padded with -1) for a ctc output."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimize.errors import OptimizeError


@dataclass
class Dataset:
    """Arrays keyed by model input name, plus optional labels; rows align."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    path: Path | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.inputs.items()}

    def take(self, n: int) -> dict[str, np.ndarray]:
        """n rows, cycling the set when it holds fewer (for benchmark batches)."""
        idx = np.arange(n) % len(self)
        return {k: np.ascontiguousarray(v[idx]) for k, v in self.inputs.items()}


def load(path: Path, input_names: list[str], role: str, optional: frozenset[str] = frozenset()) -> Dataset:
    """Read an .npz (never pickles) and bind its arrays to the model's inputs; a trailing run of inputs
    named in `optional` (arguments with a default) may be left out (the Dataset then binds fewer)."""
    if not path.is_file():
        raise OptimizeError(f"{role} data '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise OptimizeError(f"{role} data '{path}' is not a readable .npz file: {exc}") from None
    labels = arrays.pop("y", None)
    if "x" in arrays and len(arrays) == 1:
        required = [n for n in input_names if n not in optional]
        if len(required) > 1:
            raise OptimizeError(
                f"{role} data '{path}' has a single array 'x' but the model takes {len(required)} inputs "
                f"({', '.join(required)}); store one array per input name"
            )
        inputs = {input_names[0]: arrays["x"]}
    else:
        input_names = bound_names(input_names, set(arrays), optional)
        missing = [n for n in input_names if n not in arrays]
        extra = sorted(set(arrays) - set(input_names))
        if missing or extra:
            raise OptimizeError(
                f"{role} data '{path}' arrays {sorted(arrays)} do not match the model inputs {input_names} "
                f"(missing {missing}, unexpected {extra}); use 'x' for a single-input model"
            )
        inputs = {n: arrays[n] for n in input_names}
    counts = {k: len(v) if v.ndim else 0 for k, v in inputs.items()}
    n = next(iter(counts.values()))
    if n == 0:
        raise OptimizeError(f"{role} data '{path}' is empty (0 rows)")
    if len(set(counts.values())) != 1:
        raise OptimizeError(f"{role} data '{path}' arrays have different row counts: {counts}")
    for k, v in inputs.items():
        if v.dtype.kind not in "fiub":
            raise OptimizeError(f"{role} data '{path}' array '{k}' has unsupported dtype {v.dtype}")
    if labels is not None:
        if labels.dtype.kind not in "iu" or labels.ndim not in (1, 2):
            raise OptimizeError(
                f"{role} data '{path}' labels 'y' must be integers, one class per row (rank 1) or a sequence per "
                f"row padded with -1 (rank 2), got {labels.dtype} {labels.shape}"
            )
        if len(labels) != n:
            raise OptimizeError(f"{role} data '{path}' has {n} inputs but {len(labels)} labels")
        labels = labels.astype(np.int64)
    return Dataset(inputs, labels, path)


def bound_names(names: list[str], present: set[str], optional: frozenset[str]) -> list[str]:
    """The model inputs the data binds: all of them, less the trailing optional ones it leaves out."""
    end = len(names)
    while end and names[end - 1] in optional and names[end - 1] not in present:
        end -= 1
    return names[:end]
