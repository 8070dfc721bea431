"""Ours vs MLServer: the same ONNX files, threads and clients; every engine up at once, measurement windows
alternating round after round (idle engines cost no CPU). Each engine's figures: req/s at 8 connections
(closed loop) and round-trip p50/p99 at 1 connection; ratios are medians of per-round ratios."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.serving.forms import Request, RequestForm
from bench.serving.measure import Settings, latency, pct
from bench.serving.servers import MLServer, Server, ServerProcess

CONNECTIONS = 8


@dataclass
class Figures:
    """One engine's per-round figures."""

    rps: list[float] = field(default_factory=list)  # at CONNECTIONS connections
    p50: list[float] = field(default_factory=list)  # ms, at 1 connection
    p99: list[float] = field(default_factory=list)
    rss_mb: float = 0.0


def alternate(
    engines: dict[str, tuple[ServerProcess, ServerProcess]],
    form: RequestForm,
    latency_request: Request,
    load_request: Request,
    latency_requests: int,
    run: Settings,
) -> dict[str, Figures]:
    """``engines``: name -> (server for the latency loop, server for the load window; may be the same one).
    Engines that do not serve ``form`` are left out."""
    ports = {name: (form.port(lat), form.port(load)) for name, (lat, load) in engines.items()}
    served = {name: (lat, load) for name, (lat, load) in ports.items() if lat and load}
    figures = {name: Figures() for name in served}
    for _, load_port in served.values():
        form.load(load_port, load_request, CONNECTIONS, 1)  # warm-up
    for _ in range(run.rounds):
        for name, (latency_port, load_port) in served.items():
            figures[name].rps.append(form.load(load_port, load_request, CONNECTIONS, run.seconds).rps)
            t = latency(form, latency_port, latency_request, latency_requests)
            figures[name].p50.append(pct(t, 50))
            figures[name].p99.append(pct(t, 99))
    for name in served:
        figures[name].rss_mb = max(server.rss_mb() for server in engines[name])
    return figures


def median_ratio(a: list[float], b: list[float]) -> float:
    return float(np.median(np.array(a) / np.array(b)))


def compare_mlps(
    exe: Path, small: Path, heavy: Path, inputs: dict[str, dict[str, np.ndarray]], form: RequestForm, run: Settings
) -> None:
    """Batch-1 latency on the small MLP; req/s at 8 connections on the heavy one, both engines batching
    (8 rows, 2 ms). ``inputs``: one row per model name."""
    with ExitStack() as stack:
        t, env = run.cpus, form.server_env
        engines: dict[str, tuple[ServerProcess, ServerProcess]] = {
            "ours": (
                stack.enter_context(Server(small, run.root / f"cmp-small-{form.name}.log", **run.ours, **env)),
                stack.enter_context(
                    Server(
                        heavy, run.root / f"cmp-heavy-{form.name}.log", **run.ours, max_queue_delay_ms=2, **env
                    )
                ),
            ),
            "mlserver": (
                stack.enter_context(MLServer(exe, small, run.root / "mls-small", "small", t, batch=False)),
                stack.enter_context(MLServer(exe, heavy, run.root / "mls-heavy", "heavy", t, batch=True)),
            ),
        }
        small_request = form.encode("small", inputs["small"])
        heavy_request = form.encode("heavy", inputs["heavy"])
        figures = alternate(engines, form, small_request, heavy_request, run.requests, run)
    print(f"\n## vs MLServer ({form.title}; same ONNX files and threads; MLServer via a minimal onnxruntime MLModel)")
    for who, f in figures.items():
        print(
            f"{who:9s} batch-1 p50 {np.median(f.p50):6.3f} ms  p99 {np.median(f.p99):6.3f} ms   "
            f"8 conns (batching 8 rows/2 ms) {np.median(f.rps):7.1f} req/s   RSS {f.rss_mb:.0f} MB"
        )
    if {"ours", "mlserver"} <= figures.keys():
        ours, theirs = figures["ours"], figures["mlserver"]
        print(
            f"ratio ours/MLServer (median per round): p50 latency {median_ratio(ours.p50, theirs.p50):.2f}x, "
            f"throughput {median_ratio(ours.rps, theirs.rps):.2f}x"
        )


def compare_example(
    title: str,
    exe: Path,
    model_dir: Path,
    model: str,
    inputs: dict[str, np.ndarray],
    form: RequestForm,
    run: Settings,
    latency_requests: int,
    target: float,
) -> None:
    """Ours at its defaults (batching 8 rows, no delay) vs MLServer with adaptive batching (8 rows, 2 ms) and
    without; the throughput ratio is against MLServer's better one in each round."""
    with ExitStack() as stack:
        ours = stack.enter_context(
            Server(
                model_dir, run.root / f"{model}-ours-{form.name}.log", **run.ours, **form.server_env
            )
        )
        batching = stack.enter_context(MLServer(exe, model_dir, run.root / "mls-b", model, run.cpus, batch=True))
        plain = stack.enter_context(MLServer(exe, model_dir, run.root / "mls-nb", model, run.cpus, batch=False))
        engines: dict[str, tuple[ServerProcess, ServerProcess]] = {
            "ours": (ours, ours),
            "mlserver batching": (batching, batching),
            "mlserver no batching": (plain, plain),
        }
        request = form.encode(model, inputs)
        figures = alternate(engines, form, request, request, latency_requests, run)
    print(
        f"\n## vs MLServer ({title}, {form.title}; same ONNX file, threads and client; "
        f"{run.rounds} rounds of {run.seconds:g} s)"
    )
    for who, f in figures.items():
        print(
            f"{who:22s} 8 conns {np.median(f.rps):7.1f} req/s (min/max {min(f.rps):.0f}/{max(f.rps):.0f})"
            f"   1 conn p50 {np.median(f.p50):6.3f} ms  p99 {np.median(f.p99):6.3f} ms   RSS {f.rss_mb:.0f} MB"
        )
    if {"ours", "mlserver batching", "mlserver no batching"} <= figures.keys():
        best = np.maximum(np.array(figures["mlserver batching"].rps), np.array(figures["mlserver no batching"].rps))
        ratio = median_ratio(figures["ours"].rps, list(best))
        lat = median_ratio(figures["ours"].p50, figures["mlserver no batching"].p50)
        print(
            f"throughput ours / MLServer's better config (median per-round ratio): {ratio:.2f}x   "
            f"(target >= {target:g}x: {'met' if ratio >= target else 'MISSED'})"
        )
        print(f"batch-1 p50 latency ours / MLServer (no batching): {lat:.2f}x")
