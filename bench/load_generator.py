"""Closed-loop load for every throughput window in the benchmarks: wrk for HTTP/1.1, ghz for gRPC.

wrk is C with one event-loop thread: it drives 8 keep-alive connections on a small share of one core.
A pool of Python http.client threads needed about a whole core of the two this machine has, so the server
under test lost CPU and formed half-full batches; wrk leaves the CPU to the server (and to MLServer alike).
gRPC needs HTTP/2, which wrk does not speak: ghz (Go, built from its module on first use, limited to one
CPU like wrk's one thread) drives the same number of connections, one call in flight on each.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON_HEADERS = {"Content-Type": "application/json"}
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.93.0"
TOOLS = Path(__file__).resolve().parents[1] / ".cache" / "tools"  # git-ignored

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


def post_script(headers: dict[str, str]) -> str:
    """The wrk script POSTing the body in $WRK_BODY_FILE with ``headers``."""
    set_headers = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    read_body = ['local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))', 'wrk.body = f:read("*a")', "f:close()"]
    return "\n".join(['wrk.method = "POST"', *set_headers, *read_body]) + "\n"


POST_SCRIPT = post_script(JSON_HEADERS)


def wrk(
    port: int, path: str, payload: bytes, connections: int, seconds: float, headers: dict[str, str] = JSON_HEADERS
) -> WrkResult:
    """``connections`` keep-alive connections POSTing ``payload`` back to back for ``seconds`` (whole, >= 1)."""
    with tempfile.TemporaryDirectory() as tmp:
        body, script = Path(tmp) / "body.json", Path(tmp) / "post.lua"
        body.write_bytes(payload)
        script.write_text(post_script(headers))
        cmd = [wrk_executable(), "-t1", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s", "--latency"]
        cmd += ["--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{port}{path}"]
        proc = subprocess.run(
            cmd, env={**os.environ, "WRK_BODY_FILE": str(body)}, capture_output=True, text=True,
            timeout=seconds + 60, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return parse(proc.stdout)


def ghz_executable() -> str:
    """ghz on PATH, else the one built here from its Go module (needs Go and the module proxy, once)."""
    found = shutil.which("ghz")
    if found:
        return found
    built = TOOLS / "ghz-v0.93.0" / "ghz"
    if not built.is_file():
        if not shutil.which("go"):
            raise SystemExit("the gRPC load comes from ghz: put it on PATH, or install Go so it can be built")
        print(f"building ghz from {GHZ_MODULE} ...", flush=True)
        env = {**os.environ, "GOBIN": str(built.parent)}
        subprocess.run(["go", "install", GHZ_MODULE], env=env, check=True, timeout=900)
    return str(built)


def ghz(port: int, method: str, proto: Path, message: bytes, connections: int, seconds: float) -> WrkResult:
    """``connections`` HTTP/2 connections, one unary call in flight on each, sending the serialized
    ``message`` to ``method`` (package.Service.Method) back to back for ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "message.bin"
        # Length-delimited: ghz first tries to read -B as a run of such messages, and a large message's
        # own bytes can pass for several.
        data.write_bytes(_varint(len(message)) + message)
        cmd = [ghz_executable(), "--insecure", "--proto", str(proto), "--import-paths", str(proto.parent)]
        cmd += ["--call", method, "-B", str(data), "-c", str(connections), "--connections", str(connections)]
        cmd += ["--cpus", "1", "-z", f"{max(1, math.ceil(seconds))}s", "-O", "json", f"127.0.0.1:{port}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"ghz failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_ghz(json.loads(proc.stdout))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def parse_ghz(report: dict[str, Any]) -> WrkResult:
    """ghz's JSON report -> WrkResult; failed calls are an error, except the few cut off when the window
    closes its connections ("transport is closing", "the client connection is closing")."""
    errors = {k: v for k, v in (report.get("errorDistribution") or {}).items() if "is closing" not in k}
    if errors:
        raise RuntimeError(f"failed calls under load: {errors}")
    latency = {row["percentage"]: row["latency"] / 1e6 for row in report.get("latencyDistribution") or []}
    ok = (report.get("statusCodeDistribution") or {}).get("OK", 0)
    return WrkResult(float(report["rps"]), int(ok), latency[50], latency[99])
