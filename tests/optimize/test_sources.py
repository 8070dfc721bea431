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


def _checkpoints(model) -> dict[str, dict]:
    """The ways training scripts save weights (weights_only-loadable), keyed by a short name."""
    import torch

    sd = model.state_dict()
    opt = torch.optim.Adam(model.parameters())
    return {
        "training-loop": {"model_state_dict": sd, "optimizer_state_dict": opt.state_dict(), "epoch": 7, "loss": 0.12},
        "lightning": {"state_dict": {**{f"model.{k}": v for k, v in sd.items()},
                                     "loss_fn.pos_weight": torch.ones(3)},
                      "epoch": 4, "global_step": 900, "pytorch-lightning_version": "2.5.0"},
        "data-parallel": {f"module.{k}": v for k, v in sd.items()},
        "ddp-compiled": {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
    }


@pytest.mark.parametrize("layout", ["training-loop", "lightning", "data-parallel", "ddp-compiled"])
def test_training_checkpoints_load_the_models_weights(tmp_path, layout):
    import torch

    from tests.optimize import models

    model = models.trained_mlp()
    path = tmp_path / "checkpoint.pt"
    torch.save(_checkpoints(model)[layout], path)
    src = sources.load(path, "tests.optimize.models:build_mlp")
    x = torch.randn(5, models.FEATURES)
    with torch.no_grad():
        assert torch.equal(src.model(x), model(x))


def test_a_checkpoint_of_another_architecture_names_the_mismatch(tmp_path):
    import torch

    from tests.optimize import models

    torch.save(_checkpoints(models.TinyCNN())["training-loop"], tmp_path / "cnn.pt")
    with pytest.raises(OptimizeError, match=r"does not fit factory .*missing keys .*unexpected .*right architecture"):
        sources.load(tmp_path / "cnn.pt", "tests.optimize.models:build_mlp")


def test_a_checkpoint_without_weights_names_its_keys(tmp_path):
    import torch

    torch.save({"epoch": 3, "config": {"lr": 0.1}}, tmp_path / "meta.pt")
    with pytest.raises(OptimizeError, match=r"holds no tensors .*top-level keys: config, epoch"):
        sources.load(tmp_path / "meta.pt", "tests.optimize.models:build_mlp")
