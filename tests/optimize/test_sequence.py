"""optimize.sequence: which inputs carry a sequence length, from what the data shows."""

from __future__ import annotations

import numpy as np
import pytest

from optimize import sequence
from optimize.errors import OptimizeError


def _mask(lengths, width, left=False):
    rows = np.zeros((len(lengths), width), dtype=np.int64)
    for i, n in enumerate(lengths):
        if left:
            rows[i, width - n :] = 1
        else:
            rows[i, :n] = 1
    return rows


@pytest.mark.parametrize("left", [False, True])
def test_a_padding_mask_makes_axis_1_of_every_input_of_its_length_a_sequence(left):
    mask = _mask([3, 8, 5], 8, left)
    data = {"input_ids": np.ones((3, 8), np.int64), "attention_mask": mask, "extra": np.ones((3, 4), np.float32)}
    found = sequence.find(data)
    assert found is not None and found.inputs == ("input_ids", "attention_mask") and found.length == 8
    assert found.evidence == "'attention_mask' is a padding mask (rows of 3-8 of 8)"
    short = sequence.cut(data, found)
    assert short["input_ids"].shape == (3, 4) and short["extra"].shape == (3, 4)


@pytest.mark.parametrize(
    "array",
    [
        _mask([8, 8, 8], 8),  # no padding: nothing shows the length varies
        np.array([[1, 0, 1, 0], [1, 1, 0, 0]]),  # 0/1 features, not a run of ones
        np.array([[2, 1, 0, 0], [1, 0, 0, 0]]),  # not 0/1
        _mask([2, 3], 4).astype(np.float32),  # a float input is not a mask
        np.concatenate([_mask([2], 4), _mask([3], 4, left=True)]),  # padded on both sides at once
    ],
)
def test_no_sequence_without_a_padding_mask(array):
    assert sequence.find({"x": array}) is None


def test_validation_and_calibration_of_different_lengths_show_a_sequence():
    val = {"x": np.zeros((4, 10, 3), np.float32)}
    found = sequence.find(val, {"x": np.zeros((2, 7, 3), np.float32)})
    assert found is not None and found.inputs == ("x",) and found.length == 10
    assert "10 steps in the validation data, 7 in calibration" in found.evidence
    assert sequence.find(val, {"x": np.zeros((2, 10, 3), np.float32)}) is None


def test_verify_fails_when_the_export_fixed_the_length():
    axes = sequence.find({"mask": _mask([2, 6], 6)})
    assert axes is not None

    def source(mask):
        return [mask.sum(1, keepdims=True).astype(np.float32)]

    sequence.verify(source, source, {"mask": _mask([2, 6], 6)}, axes)  # the same model passes

    def fixed(mask):
        return [np.full((len(mask), 1), 6.0, np.float32)]

    with pytest.raises(OptimizeError, match=r"at 3 steps output 0 differs from the source's"):
        sequence.verify(source, fixed, {"mask": _mask([2, 6], 6)}, axes)

    def rejects(mask):
        raise RuntimeError("Got invalid dimensions for input: mask\nindex: 1 Got: 3 Expected: 6")

    with pytest.raises(OptimizeError, match=r"the exported graph rejects 3 steps: Got invalid dimensions"):
        sequence.verify(source, rejects, {"mask": _mask([2, 6], 6)}, axes)
