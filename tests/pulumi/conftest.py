"""The stack files point at the example models and (local) the image's wheelhouse: make them once,
as `make examples` and scripts/wheelhouse.py do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts import wheelhouse
from tests.pulumi_harness import ROOT


@pytest.fixture(scope="session", autouse=True)
def example_models() -> None:
    for name in ("digits", "text"):
        subprocess.run([sys.executable, "-m", f"examples.{name}.train", "--out", f"examples/{name}/build"],
                       cwd=ROOT, check=True)
    wheelhouse.fill()
