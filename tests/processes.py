"""Stopping the processes tests start: SIGTERM first (they drain), SIGKILL if they hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> int | None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_docker_registry(root: Path, timeout_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Debian's docker-registry on a free 127.0.0.1 port, storing under `root`; (process, host:port) once
    it answers. Stop it with stop()."""
    root.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{free_port()}"
    config = root / "registry.yml"
    config.write_text(yaml.safe_dump({"version": 0.1, "http": {"addr": host},
                                      "storage": {"filesystem": {"rootdirectory": str(root / "data")}}}))
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
            return proc, host
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop(proc)
                raise AssertionError(f"docker-registry did not answer on {host}") from None
            time.sleep(0.2)
