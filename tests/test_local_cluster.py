"""local-cluster/cluster.sh refuses what cannot work before it starts anything, in one line: no root or
sudo for the node (naming what needs it), a port already taken (naming the process that holds it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port, stop

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "local-cluster" / "cluster.sh"
PORT_VARIABLES = ("MODELSTACK_APISERVER_PORT", "MODELSTACK_ETCD_PORT", "MODELSTACK_REGISTRY_PORT",
                  "MODELSTACK_KUBELET_PORT", "MODELSTACK_KUBE_PROXY_PORT")


@pytest.fixture
def state() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:  # readable by an unprivileged user, unlike pytest's tmp_path
        Path(tmp).chmod(0o777)
        yield Path(tmp) / "cluster"


def free_ports() -> dict[str, str]:
    """A free port for each variable, with the neighbours the daemons also take (etcd +1, kubelet -2,
    kube-proxy -7) free too."""
    out: dict[str, str] = {}
    while len(out) < len(PORT_VARIABLES):
        port = free_port()
        if port < 20000 or any(abs(port - int(p)) < 10 for p in out.values()):
            continue
        if all(_is_free(port + d) for d in (-7, -2, 1)):
            out[PORT_VARIABLES[len(out)]] = str(port)
    return out


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def up(env: dict[str, str], user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(CLUSTER), "up"]
    if user:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        cmd = [runuser, "-u", user, "--", "/usr/bin/env", *(f"{k}={v}" for k, v in env.items()), *cmd]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_without_root_or_sudo_it_names_what_needs_root_and_starts_nothing(state: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test runs cluster.sh as the unprivileged user `nobody`, which needs root (as CI has)")
    env = {"MODELSTACK_CLUSTER_DIR": str(state), "PATH": "/usr/bin:/bin", **free_ports()}
    proc = up(env, user="nobody")
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith("local-cluster: the node needs root: containerd, runc, the kubelet and kube-proxy")
    assert "run `local-cluster/cluster.sh up` as root, or give nobody passwordless sudo" in line
    assert not state.exists()


def test_a_port_already_taken_names_the_process_holding_it(state: Path) -> None:
    ports = free_ports()
    holder = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                               ports["MODELSTACK_REGISTRY_PORT"]], cwd=state.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while _is_free(int(ports["MODELSTACK_REGISTRY_PORT"])):
            assert holder.poll() is None, "the port holder did not start"
        proc = up({"MODELSTACK_CLUSTER_DIR": str(state), **ports})
    finally:
        stop(holder)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"local-cluster: port {ports['MODELSTACK_REGISTRY_PORT']}, which registry needs, is "
                           f"taken by {Path(sys.executable).name} (pid {holder.pid}, in {state.parent})"), line
    assert "MODELSTACK_*_PORT" in line
    assert not state.exists()
