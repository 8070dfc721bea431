"""A bounded background load while the cluster changes: wrk POSTing one infer body to a Service through
kube-proxy, paced (each connection waits between requests) so the build beside it keeps its CPU, stopped
with SIGINT (wrk then prints its summary). Every failure counts: non-2xx answers and socket errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.load_generator import POST_SCRIPT, wrk_executable


@dataclass(frozen=True)
class LoadResult:
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]  # connect, read, write, timeout
    seconds: float
    output: str

    def summary(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in self.socket_errors.items())
        return f"{self.requests} requests in {self.seconds:.0f} s, {self.non_2xx} non-2xx, socket errors: {errors}"


def parse(output: str) -> LoadResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
    if not total:
        raise AssertionError(f"unexpected wrk output:\n{output}")
    seconds = float(total.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors = dict(zip(errors, map(int, found.groups()), strict=True))
    return LoadResult(int(total.group(1)), int(non_2xx.group(1)) if non_2xx else 0, errors, seconds, output)


class Load:
    """`with Load(url, body, work) as load: ...` then `load.result`."""

    def __init__(self, url: str, body: Path, work: Path, connections: int = 2, delay_ms: int = 20,
                 max_seconds: int = 1800, reconnect: bool = False):
        """`reconnect`: a new connection per request (`Connection: close`), so kube-proxy spreads requests over
        the pods as many clients would; kept-alive connections stay on the pods they first reached."""
        self.url, self.body, self.work = url, body, work
        self.connections, self.delay_ms, self.max_seconds = connections, delay_ms, max_seconds
        self.reconnect = reconnect
        self.result: LoadResult | None = None

    def __enter__(self) -> Load:
        script = self.work / "paced-post.lua"
        script.write_text(POST_SCRIPT + f"function delay() return {self.delay_ms} end\n")  # wrk's pacing hook
        cmd = [wrk_executable(), "-t1", f"-c{self.connections}", f"-d{self.max_seconds}s", "--timeout", "10s",
               *(["-H", "Connection: close"] if self.reconnect else []), "-s", str(script), self.url]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "WRK_BODY_FILE": str(self.body)},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        output, _ = self.proc.communicate(timeout=60)
        if kind is None:
            self.result = parse(output)
