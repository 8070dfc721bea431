"""Measurement primitives: run settings, percentiles, in-process ``session.run`` times, a round-trip latency
loop at concurrency 1, and paced (open-loop) load for the soak. Closed-loop windows are the form's ``load``."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.serving.forms import BadResponse, Request, RequestForm


@dataclass(frozen=True)
class Settings:
    """What every part of one run shares."""

    root: Path  # scratch directory: model dirs, server logs
    threads: int  # ORT intra-op threads of each run
    rounds: int  # rounds of alternating measurement windows
    seconds: float  # length of each throughput window
    requests: int  # latency samples per engine
    mlserver: Path | None  # mlserver executable (its own venv), or None: no MLServer comparison
    workers: int = 1  # runs at once: our server's compute workers, callers of the in-process ceiling

    @property
    def ours(self) -> dict[str, int]:
        """Our server's threading settings."""
        return {"compute_workers": self.workers, "intra_op_threads": self.threads}

    @property
    def cpus(self) -> int:
        """Threads of an engine that runs one model call at a time (MLServer in one process)."""
        return self.workers * self.threads


def pct(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``samples`` (seconds), in ms."""
    return float(np.percentile(np.array(samples) * 1000, q))


@dataclass(frozen=True)
class Percentiles:
    """p50 and p99 of one set of latency samples, in ms."""

    p50: float
    p99: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Percentiles:
        return cls(pct(samples, 50), pct(samples, 99))


def ort_session(model_dir: Path, threads: int) -> ort.InferenceSession:
    """A session with the server's options."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the server runs it
    return ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])


def session_rows_per_s(model_dir: Path, run: Settings, feeds: dict[str, np.ndarray], seconds: float) -> float:
    """In-process ORT's own rows/s: ``run.workers`` threads calling ``session.run`` on one session at once,
    as the server's compute workers do, for ``seconds`` after a warm-up."""
    s = ort_session(model_dir, run.threads)
    rows = len(next(iter(feeds.values())))
    calls = [0] * run.workers

    def call(i: int, until: float) -> None:
        while time.perf_counter() < until:
            s.run(None, feeds)
            calls[i] += 1

    for _ in range(20):
        s.run(None, feeds)
    until = time.perf_counter() + seconds
    workers = [threading.Thread(target=call, args=(i, until)) for i in range(run.workers)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(calls) * rows / (time.perf_counter() - start)


def session_latency(model_dir: Path, threads: int, n: int, feeds: dict[str, np.ndarray]) -> list[float]:
    """In-process ``session.run`` times in s (after warm-up), with the server's session options."""
    s = ort_session(model_dir, threads)
    for _ in range(min(200, max(20, n // 10))):
        s.run(None, feeds)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s.run(None, feeds)
        times.append(time.perf_counter() - t)
    return times


def latency(form: RequestForm, port: int, request: Request, n: int, warmup: int = 200) -> list[float]:
    """Round-trip times in s of ``n`` requests, one at a time on one keep-alive connection, after warm-up."""
    c = form.connect(port)
    try:
        for _ in range(warmup):
            c.round_trip(request)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            c.round_trip(request)
            times.append(time.perf_counter() - t)
    finally:
        c.close()
    return times


MAX_REQUESTS_PER_CONNECTION = 2_000_000  # every load loop is bounded in count as well as in time


def paced_load(
    form: RequestForm, port: int, request: Request, connections: int, seconds: float, rate: float
) -> tuple[float, list[float]]:
    """``connections`` keep-alive clients sending ``request`` for ``seconds``, each on a fixed schedule of
    rate/connections per second (late sends go at once): (requests/s, latencies in s). wrk cannot pace,
    so the soak keeps this client; every closed-loop window uses the form's ``load``."""
    counts = [0] * connections
    latencies: list[list[float]] = [[] for _ in range(connections)]
    stop = time.perf_counter() + seconds
    errors: list[str] = []
    interval = connections / rate

    def worker(i: int) -> None:
        c = form.connect(port)
        start = time.perf_counter() + interval * i / connections  # stagger the paced clients
        try:
            for k in range(MAX_REQUESTS_PER_CONNECTION):
                wait = start + k * interval - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                t = time.perf_counter()
                if t >= stop:
                    break
                try:
                    c.round_trip(request)
                except BadResponse as e:
                    errors.append(str(e.status))
                latencies[i].append(time.perf_counter() - t)
                counts[i] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"non-200 responses: {errors[:5]}")
    return sum(counts) / (time.perf_counter() - t0), [x for lat in latencies for x in lat]
