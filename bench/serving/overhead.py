"""Overhead at batch 1, concurrency 1: a server round trip beside in-process ``session.run`` of the same model
with the same inputs and threads, and beside a bare-uvicorn floor (client + HTTP stack, no app).

Only measured percentiles are printed. The p50 overhead is a difference of medians (labelled so); a
difference of p99s is not a percentile of anything, so the tail is shown as both p99s side by side and
checked as a bound: server p99 <= session.run p99 + 2 ms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.serving.forms import RequestForm
from bench.serving.measure import Percentiles, Settings, latency, session_latency
from bench.serving.servers import FloorServer, Server

P50_TARGET_MS = 0.5  # server p50 - session.run p50
P99_ALLOWANCE_MS = 2.0  # server p99 <= session.run p99 + this


def overhead(
    title: str, model_dir: Path, model: str, inputs: dict[str, np.ndarray], form: RequestForm, run: Settings
) -> None:
    session = Percentiles.of(session_latency(model_dir, run.threads, run.requests, inputs))
    request = form.encode(model, inputs)
    floor = None
    if form.over_http:
        with FloorServer() as floor_server:
            floor = Percentiles.of(latency(form, floor_server.port, request, run.requests))
    with Server(
        model_dir, run.root / f"{model}-overhead-{form.name}.log", **run.ours, **form.server_env
    ) as server:
        port = form.port(server)
        assert port, f"our server has no port for {form.name}"
        served = Percentiles.of(latency(form, port, request, run.requests))
        rss = server.rss_mb()
    print("\n" + "\n".join(overhead_report(f"{title}, {form.title}", session, served, floor, rss)))


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def overhead_report(
    title: str, session: Percentiles, served: Percentiles, floor: Percentiles | None, rss_mb: float
) -> list[str]:
    """The overhead section's lines (pure: the figures in, the text out)."""
    lines = [
        f"## overhead ({title}; batch 1, concurrency 1, one keep-alive connection)",
        f"{'':27s}     p50 ms     p99 ms",
        f"{'session.run in-process':27s} {session.p50:10.3f} {session.p99:10.3f}",
        f"{'server round trip':27s} {served.p50:10.3f} {served.p99:10.3f}",
    ]
    if floor is not None:
        lines.append(f"{'bare uvicorn floor':27s} {floor.p50:10.3f} {floor.p99:10.3f}   (client + HTTP stack, no app)")
    p50_overhead = served.p50 - session.p50
    bound = session.p99 + P99_ALLOWANCE_MS
    lines += [
        f"overhead p50, difference of medians (server - session.run): {p50_overhead:.3f} ms   "
        f"(target <= {P50_TARGET_MS:g} ms: {_verdict(p50_overhead <= P50_TARGET_MS)})",
        f"tail: server p99 {served.p99:.3f} ms, session.run p99 {session.p99:.3f} ms   (target server p99 <= "
        f"session.run p99 + {P99_ALLOWANCE_MS:g} ms = {bound:.3f} ms: {_verdict(served.p99 <= bound)})",
    ]
    if floor is not None:
        ours = served.p50 - floor.p50 - session.p50
        lines.append(f"our code p50, difference of medians (server - floor - session.run): {ours:.3f} ms")
    lines.append(f"server RSS: {rss_mb:.0f} MB")
    return lines
