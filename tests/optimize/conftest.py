"""Fixtures: tiny trained models saved in every source format, data files, a
fast recipe. Built once per session."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from optimize.recipe import BenchmarkSpec, GateSpec, QuantizeSpec, Recipe
from tests.optimize import models

# A short benchmark keeps each full build to a few seconds.
FAST = BenchmarkSpec(threads=1, batch_sizes=(1, 4), warmup=2, iterations=5)
LOOSE_GATE = GateSpec(max_accuracy_drop=0.05, min_agreement=0.9)


def fast_recipe(**sections) -> Recipe:
    sections.setdefault("benchmark", FAST)
    sections.setdefault("gate", LOOSE_GATE)
    sections.setdefault("quantize", QuantizeSpec(mode="dynamic_int8"))
    return Recipe(name="test", **sections)


@pytest.fixture(scope="session")
def mlp(tmp_path_factory) -> dict[str, Path]:
    """Paths: each model format, plus validation.npz / calibration.npz."""
    import torch

    root = tmp_path_factory.mktemp("mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = models.save_all_formats(models.trained_mlp(), torch.zeros(2, models.FEATURES), root)
    x, y = models.mlp_data(400, seed=1)
    np.savez(root / "validation.npz", x=x, y=y)
    xc, yc = models.mlp_data(64, seed=2)
    np.savez(root / "calibration.npz", x=xc, y=yc)
    paths["validation"] = root / "validation.npz"
    paths["calibration"] = root / "calibration.npz"
    return paths


@pytest.fixture(scope="session")
def cnn(tmp_path_factory) -> dict[str, Path]:
    import torch

    root = tmp_path_factory.mktemp("cnn")
    model = models.trained_cnn()
    example = torch.zeros(2, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, example).save(str(root / "model.pt"))
    x, y = models.cnn_data(256, seed=1)
    np.savez(root / "validation.npz", x=x, y=y)
    xc, yc = models.cnn_data(64, seed=2)
    np.savez(root / "calibration.npz", x=xc, y=yc)
    return {
        "torchscript": root / "model.pt",
        "validation": root / "validation.npz",
        "calibration": root / "calibration.npz",
    }


def leftovers(parent: Path, name: str) -> list[str]:
    """The output directory or any temporary sibling of it."""
    return sorted(p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}."))


def run_example(module: str, out: Path, *extra: str, timeout: int = 300) -> str:
    """Build an example the way `make examples` does (its own process); returns its stdout."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", module, "--out", str(out), *extra],
                          capture_output=True, text=True, cwd=root, env=env, timeout=timeout, check=True)  # fmt: skip
    return proc.stdout
