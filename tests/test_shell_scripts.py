"""The project's own shell scripts outside scripts/ci (tests/ci lints those): shellcheck finds nothing at
warning level, sourced files followed, and each starts strict."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in [*REPO.glob("scripts/*.sh"), *REPO.glob("local-cluster/*.sh"), REPO / "tools" / "build.sh"])
SOURCED = {"local-cluster/daemons.sh"}  # declarations that cluster.sh sources, never run


def test_there_are_scripts() -> None:
    assert {str(p.relative_to(REPO)) for p in SCRIPTS} >= {"local-cluster/cluster.sh", "scripts/up.sh",
                                                            "tools/build.sh", *SOURCED}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_finds_nothing(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run scripts/install-system-deps.sh"
    proc = subprocess.run([shellcheck, "-x", "-S", "warning", str(script.relative_to(REPO))], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if str(script.relative_to(REPO)) not in SOURCED:
        assert "\nset -euo pipefail\n" in script.read_text(), "not strict"
