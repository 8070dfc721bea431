"""Closed-loop HTTP load from wrk, the load generator for every throughput window in the benchmarks.

wrk is C with one event-loop thread: it drives 8 keep-alive connections on a small share of one core.
A pool of Python http.client threads needed about a whole core of the two this machine has, so the server
under test lost CPU and formed half-full batches; wrk leaves the CPU to the server (and to MLServer alike).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
"""

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float


def wrk_executable() -> str:
    exe = shutil.which("wrk")
    if not exe:
        raise SystemExit("the serving benchmark drives its load with wrk: install it (apt-get install -y wrk)")
    return exe


def _latency_ms(text: str, percentile: int) -> float:
    m = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if not m:
        raise RuntimeError(f"no {percentile}% latency in wrk output:\n{text}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse(text: str) -> WrkResult:
    """wrk --latency output -> WrkResult; any non-2xx response or socket error is an error, not a figure."""
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        raise RuntimeError(f"{m.group(1)} non-2xx responses under load:\n{text}")
    if m := re.search(r"Socket errors: (.*)", text):
        raise RuntimeError(f"socket errors under load ({m.group(1)}):\n{text}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if not rps or not total:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    return WrkResult(float(rps.group(1)), int(total.group(1)), _latency_ms(text, 50), _latency_ms(text, 99))


def wrk(port: int, path: str, payload: bytes, connections: int, seconds: float) -> WrkResult:
    """``connections`` keep-alive connections POSTing ``payload`` back to back for ``seconds`` (whole, >= 1)."""
    with tempfile.TemporaryDirectory() as tmp:
        body, script = Path(tmp) / "body.json", Path(tmp) / "post.lua"
        body.write_bytes(payload)
        script.write_text(POST_SCRIPT)
        cmd = [wrk_executable(), "-t1", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s", "--latency"]
        cmd += ["--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{port}{path}"]
        proc = subprocess.run(
            cmd, env={**os.environ, "WRK_BODY_FILE": str(body)}, capture_output=True, text=True,
            timeout=seconds + 60, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return parse(proc.stdout)
