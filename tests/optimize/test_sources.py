"""Source formats are recognised by content; bad files fail with a reason."""

from __future__ import annotations

import pickle

import pytest

from optimize import sources
from optimize.errors import OptimizeError


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program", "state_dict", "onnx"])
def test_detects_each_format(mlp, fmt):
    assert sources.detect_format(mlp[fmt]) == fmt


def test_loads_each_format_with_input_names(mlp):
    for fmt in ("torchscript", "exported_program", "onnx"):
        assert sources.load(mlp[fmt]).input_names == ["x"]
    src = sources.load(mlp["state_dict"], "tests.optimize.models:build_mlp")
    assert src.format == "state_dict" and src.input_names == ["x"]


def test_state_dict_needs_factory(mlp):
    with pytest.raises(OptimizeError, match="--factory"):
        sources.load(mlp["state_dict"])


def test_state_dict_with_wrong_factory(mlp):
    with pytest.raises(OptimizeError, match="does not fit factory"):
        sources.load(mlp["state_dict"], "tests.optimize.models:TinyCNN")


def test_truncated_archive(mlp, tmp_path):
    data = mlp["torchscript"].read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(OptimizeError, match=r"unknown format|corrupt|truncated"):
        sources.load(bad)


def test_bit_flip_is_caught_by_checksum(mlp, tmp_path):
    data = bytearray(mlp["exported_program"].read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "flip.pt2"
    bad.write_bytes(bytes(data))
    with pytest.raises(OptimizeError, match=r"corrupt|truncated"):
        sources.load(bad)


def test_corrupt_onnx(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(OptimizeError, match="not a valid ONNX model"):
        sources.load(bad)


def test_legacy_pickle_is_not_unpickled(tmp_path):
    bad = tmp_path / "model.pkl"
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(OptimizeError, match="legacy pickle"):
        sources.load(bad)


def test_missing_and_empty(tmp_path):
    with pytest.raises(OptimizeError, match="does not exist"):
        sources.load(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(OptimizeError, match="is empty"):
        sources.load(tmp_path / "empty.pt")
