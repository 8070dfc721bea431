"""Dynamic batching: req/s at 8 connections of batch-1 requests, our server with batching off vs on (no delay,
and a 2 ms max_queue_delay), with the compute that batching can save (in-process ``session.run`` at 1 row vs
8 rows) and the tail check: batched p99 <= unbatched p99 + max_queue_delay + one full batch's compute.

All three servers start once and stay up (idle ones cost no CPU); measurement windows rotate among them
round after round, so load from other processes on a shared machine hits each alike. Ratios are medians of
per-round ratios; p50/p99 under load are medians of the load generator's per-window percentiles.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np

from bench.serving.forms import RequestForm
from bench.serving.measure import Settings, pct, session_latency
from bench.serving.servers import Server

MAX_BATCH = 8
CONNECTIONS = 8
SPEEDUP_TARGET = 1.6
RSS_TARGET_MB = 300
OFF = "off (max_batch_size=1)"
CONFIGS: dict[str, tuple[dict[str, int], float]] = {  # name: (server settings, max_queue_delay in ms)
    OFF: ({"max_batch_size": 1}, 0.0),
    "on  (max_batch_size=8, delay 0)": ({"max_batch_size": MAX_BATCH, "max_queue_delay_ms": 0}, 0.0),
    "on  (max_batch_size=8, delay 2 ms)": ({"max_batch_size": MAX_BATCH, "max_queue_delay_ms": 2}, 2.0),
}


def batching(
    title: str, model_dir: Path, model: str, inputs: dict[str, np.ndarray], form: RequestForm, run: Settings
) -> None:
    """``inputs``: one row per input, the request every connection sends."""
    full = {k: np.ascontiguousarray(np.repeat(x, MAX_BATCH, axis=0)) for k, x in inputs.items()}
    compute = pct(session_latency(model_dir, run.threads, 100, full), 50)  # one full batch, ms
    single = pct(session_latency(model_dir, run.threads, 200, inputs), 50)  # one row, ms
    request = form.encode(model, inputs)
    rates: dict[str, list[float]] = {k: [] for k in CONFIGS}
    p50s: dict[str, list[float]] = {k: [] for k in CONFIGS}
    p99s: dict[str, list[float]] = {k: [] for k in CONFIGS}
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        ports: dict[str, int] = {}
        for i, (name, (env, _)) in enumerate(CONFIGS.items()):
            log = run.root / f"{model}-batch{i}-{form.name}.log"
            servers[name] = stack.enter_context(
                Server(model_dir, log, **run.ours, **env, **form.server_env)
            )
            port = form.port(servers[name])
            assert port, f"our server has no port for {form.name}"
            ports[name] = port
            form.load(port, request, CONNECTIONS, 1)  # warm-up
        for _ in range(run.rounds):
            for name, port in ports.items():
                window = form.load(port, request, CONNECTIONS, run.seconds)
                rates[name].append(window.rps)
                p50s[name].append(window.p50_ms)
                p99s[name].append(window.p99_ms)
        batch = {name: server.mean_batch() for name, server in servers.items()}
        rss = {name: server.rss_mb() for name, server in servers.items()}

    off = np.array(rates[OFF])
    off_p99 = float(np.median(p99s[OFF]))
    print(
        f"\n## dynamic batching ({title}, {form.title}; {CONNECTIONS} connections, batch 1 each; "
        f"{run.rounds} rounds of {run.seconds:g} s)"
    )
    print(f"one batch of {MAX_BATCH} rows, in-process session.run p50: {compute:.2f} ms (1 row: {single:.2f} ms)")
    print(
        f"ORT alone does {single * MAX_BATCH / compute:.2f}x more rows/s at batch {MAX_BATCH} than at batch 1: "
        "the compute that batching can save"
    )
    for name, (_, delay) in CONFIGS.items():
        ratio = float(np.median(np.array(rates[name]) / off))
        p50, p99 = float(np.median(p50s[name])), float(np.median(p99s[name]))
        print(
            f"batching {name:36s} {np.median(rates[name]):7.1f} req/s  x{ratio:.2f} (median per-round ratio)  "
            f"min/max {min(rates[name]):.0f}/{max(rates[name]):.0f}  mean batch {batch[name]:.2f}  "
            f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  RSS {rss[name]:.0f} MB"
        )
        if name != OFF:
            bound = off_p99 + delay + compute
            print(f"    speed-up target >= {SPEEDUP_TARGET:g}x: {'met' if ratio >= SPEEDUP_TARGET else 'MISSED'}")
            print(
                f"    p99 check: {p99:.2f} ms <= unbatched p99 {off_p99:.2f} + max_queue_delay {delay:g} "
                f"+ batch compute {compute:.2f} = {bound:.2f} ms: {'met' if p99 <= bound else 'MISSED'}"
            )
    top = max(rss.values())
    print(
        f"server RSS after load (max): {top:.0f} MB  "
        f"(target < {RSS_TARGET_MB} MB: {'met' if top < RSS_TARGET_MB else 'MISSED'})"
    )
