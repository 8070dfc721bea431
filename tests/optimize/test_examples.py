"""The digits example end to end: trains in seconds, rebuilds only when asked,
and keeps top-1 within a point after 50% pruning + int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimize.pipeline import build
from optimize.recipe import PRESETS, BenchmarkSpec
from tests.optimize.conftest import run_example

ROOT = Path(__file__).resolve().parents[2]


def _train(out: Path, *extra: str) -> str:
    return run_example("examples.digits.train", out, *extra)


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "build"
    _train(out)
    return out


def test_digits_build_is_complete_and_skipped_when_up_to_date(digits):
    assert {"model.pt", "validation.npz", "calibration.npz", "MANIFEST.json"} <= {p.name for p in digits.iterdir()}
    with np.load(digits / "validation.npz") as v:
        assert v["x"].dtype == np.float32 and v["y"].dtype == np.int64 and v["x"].shape[1:] == (1, 8, 8)
    assert "up to date" in _train(digits)


def test_digits_training_is_deterministic(digits, tmp_path):
    _train(tmp_path / "again", "--force")
    assert (tmp_path / "again" / "MANIFEST.json").read_text() == (digits / "MANIFEST.json").read_text()


def test_digits_prune50_int8_keeps_accuracy(digits, tmp_path):
    recipe = PRESETS["prune50-int8"].model_copy(update={"benchmark": BenchmarkSpec(warmup=2, iterations=10)})
    report = build(digits / "model.pt", recipe, tmp_path / "out", digits / "validation.npz", digits / "calibration.npz")
    assert report["accuracy"]["baseline"] > 0.95
    assert report["accuracy"]["delta"] >= -0.01  # the target: at most 1 point lost
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert report["size_ratio"] <= 0.3
