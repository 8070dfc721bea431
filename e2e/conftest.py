"""Fixtures of the end-to-end test: the local cluster (started here unless it already runs), one
throwaway stack on a file backend with a passphrase, and the step timings printed at the end."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2e.engine import CLUSTER, REPO, Stack, base_env
from scripts import wheelhouse

STACK = "e2e"
TIMINGS: dict[str, float] = {}
FIGURES: dict[str, str] = {}  # what a step measured besides time (load counts, scrape results)


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    started = subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode != 0
    if started:
        proc = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=5400)
        assert proc.returncode == 0, f"local-cluster/cluster.sh up failed:\n{proc.stderr[-4000:]}"
    pids = [int(p.read_text()) for p in (REPO / ".modelstack" / "local-cluster" / "pids").glob("*.pid")]
    try:
        yield base_env()
    finally:
        if started:
            subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=300)
            left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
            assert not left, f"local-cluster/cluster.sh down left processes {left} running"


@pytest.fixture(scope="module")
def stack(cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("e2e")
    (work / "state").mkdir()
    config = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())
    # A store of its own, so the first `up` really runs the optimize build inside the engine.
    config["config"]["modelstack:artifacts"]["store"] = str(work / "artifacts")
    # In the project directory, where `pulumi stack init` writes the passphrase's salt (git-ignored;
    # removed at the end): the committed Pulumi.local.yaml stays untouched.
    config_file = REPO / f"Pulumi.{STACK}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    wheelhouse.require(REPO / config["config"]["modelstack:image"]["wheelhouse"])
    env = {**cluster, "PULUMI_BACKEND_URL": f"file://{work / 'state'}",
           "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24)}
    s = Stack(STACK, env, TIMINGS)
    s.pulumi("stack", "init", "--secrets-provider", "passphrase")
    yield s
    # Whatever the steps left: nothing of the stack stays in the cluster or the backend.
    s.pulumi("destroy", "--yes", check=False, timeout=600)
    s.pulumi("stack", "rm", "--yes", "--force", check=False)
    config_file.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for step, text in FIGURES.items():
            terminalreporter.write_line(f"{step:<40} {text}")
    if not TIMINGS:
        return
    terminalreporter.section("pulumi command times (s)")
    for step, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{step:<40} {seconds:>7.1f}")
    out = REPO / ".modelstack" / "e2e-timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(TIMINGS, indent=2) + "\n")

