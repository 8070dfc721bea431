"""A real ``python -m serving`` process for tests, and a Prometheus text reader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests import processes

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``python -m serving`` on 127.0.0.1 with a free port; logs go to a file so pipes never block it."""

    def __init__(self, model_dir: Path, log_path: Path, cwd: Path = REPO, **env: object):
        self.log_path = log_path
        environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
        environ.update({f"MODELSTACK_SERVING_{k.upper()}": str(v) for k, v in env.items()})
        self.log = log_path.open("wb")
        cmd = [sys.executable, "-m", "serving", "--model", str(model_dir), "--port", "0", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=environ, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = 0
        self.grpc_port = 0  # with grpc_port=0 among the settings: the port it took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            if not self.port:
                m = re.search(r"serving listening on 127\.0\.0\.1:(\d+)", self.logs())
                self.port = int(m.group(1)) if m else 0
            if self.port:
                try:
                    if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                        m = re.search(r"gRPC .* listening on 127\.0\.0\.1:(\d+)", self.logs())  # started before ready
                        self.grpc_port = int(m.group(1)) if m else 0
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.logs()}")

    def stop(self) -> int:
        code = processes.stop(self.proc)
        self.log.close()
        return code if code is not None else -1


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total
