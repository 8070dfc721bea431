"""promtool and prometheus come from Debian's `prometheus` package (CI installs it); missing means failing."""

from __future__ import annotations

import shutil

import pytest


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH; install it with `apt-get install prometheus` (Debian's package "
                    "ships prometheus and promtool)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool("prometheus")
