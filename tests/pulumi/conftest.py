"""The stack files point at the example models; build them once (as `make examples` does)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.pulumi_harness import ROOT


@pytest.fixture(scope="session", autouse=True)
def example_models() -> None:
    for name in ("digits", "text"):
        subprocess.run([sys.executable, "-m", f"examples.{name}.train", "--out", f"examples/{name}/build"],
                       cwd=ROOT, check=True)
