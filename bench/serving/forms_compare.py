"""Every request form side by side on one example (issue 26's table): our server over JSON REST, binary REST
and gRPC (one process serving all three), MLServer over the forms it serves (REST JSON and gRPC, adaptive
batching on and off: its better one counts), and in-process ONNX Runtime as the ceiling.

Each (engine, form) gets a closed-loop window at 1 and at 8 connections per round (wrk for REST, ghz for
gRPC: C and Go clients, one CPU each), rounds alternating; figures are medians over rounds, ratios medians
of per-round ratios. The ceiling is ORT's own rows/s (in-process ``session.run``, same threads, timed in
every round at 1, 2, 4 and 8 rows) at the batch size nearest the mean our server formed at 8 connections
on that form; the overhead is the 1-connection p50 minus ``session.run``'s p50 at batch 1 (a difference
of medians).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.serving.forms import FORMS, RequestForm
from bench.serving.measure import Settings, pct, session_latency
from bench.serving.servers import MLServer, Server, ServerProcess

LOADS = (1, 8)  # connections
CEILING_ROWS = (1, 2, 4, 8)  # batch sizes ORT is timed at in-process, every round
TARGETS = {"forms vs our JSON REST (text, 8 conns)": 1.3, "digits": 2.5, "text": 1.5, "ceiling": 0.90}
OVERHEAD_TARGET_MS = 0.30


@dataclass
class Cell:
    """One (engine, form)'s windows, per round."""

    rps: dict[int, list[float]] = field(default_factory=lambda: {c: [] for c in LOADS})
    p50: dict[int, list[float]] = field(default_factory=lambda: {c: [] for c in LOADS})
    p99: dict[int, list[float]] = field(default_factory=lambda: {c: [] for c in LOADS})
    batch: float = 0.0  # our server: mean rows per session.run during the 8-connection windows

    def median(self, what: dict[int, list[float]], connections: int) -> float:
        return float(np.median(what[connections]))


def _batch_counts(server: ServerProcess) -> tuple[float, float]:
    """(rows, calls) of our server's batch-size histogram, to take the mean over some windows only."""
    assert isinstance(server, Server)
    return server.batch_totals()


def compare_forms(
    name: str, model_dir: Path, model: str, inputs: dict[str, np.ndarray], forms: list[RequestForm], run: Settings
) -> None:
    ours_env = {"intra_op_threads": run.threads, "grpc_port": 0}
    with ExitStack() as stack:
        engines: dict[str, ServerProcess] = {
            "ours": stack.enter_context(Server(model_dir, run.root / "forms.log", **ours_env))
        }
        if run.mlserver:
            for label, batch in (("mlserver batching", True), ("mlserver no batching", False)):
                work = run.root / label.replace(" ", "-")
                engines[label] = stack.enter_context(MLServer(run.mlserver, model_dir, work, model, run.threads, batch))
        cells: dict[tuple[str, str], Cell] = {}
        requests = {form.name: form.encode(model, inputs) for form in forms}
        for engine, server in engines.items():
            for form in forms:
                port = form.port(server)
                if port:
                    form.load(port, requests[form.name], 8, 1)  # warm-up; also proves the engine answers it
                    cells[(engine, form.name)] = Cell()
        ort_ms: dict[int, list[float]] = {rows: [] for rows in CEILING_ROWS}  # session.run p50 per round
        for _ in range(run.rounds):
            for rows in CEILING_ROWS:  # in the rounds, so the machine's noise hits the ceiling alike
                feeds = {k: np.ascontiguousarray(np.repeat(x, rows, axis=0)) for k, x in inputs.items()}
                ort_ms[rows].append(pct(session_latency(model_dir, run.threads, 100, feeds), 50))
            for (engine, form_name), cell in cells.items():
                form, server = FORMS[form_name], engines[engine]
                port = form.port(server)
                assert port
                for connections in LOADS:
                    before = _batch_counts(server) if engine == "ours" and connections == 8 else None
                    window = form.load(port, requests[form_name], connections, run.seconds)
                    cell.rps[connections].append(window.rps)
                    cell.p50[connections].append(window.p50_ms)
                    cell.p99[connections].append(window.p99_ms)
                    if before is not None:
                        after = _batch_counts(server)
                        cell.batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        rss = {engine: server.rss_mb() for engine, server in engines.items()}
    report(name, {rows: float(np.median(ms)) for rows, ms in ort_ms.items()}, cells, rss, run)


def report(
    name: str, ort_ms: dict[int, float], cells: dict[tuple[str, str], Cell], rss: dict[str, float], run: Settings
) -> None:
    """``ort_ms``: in-process session.run p50 (ms, median over rounds) by batch size."""
    single = ort_ms[1]
    print(
        f"\n## request forms ({name}; {run.rounds} rounds of {run.seconds:g} s per window; ORT threads {run.threads})"
    )
    print(f"in-process session.run, batch 1: p50 {single:.3f} ms ({1000 / single:.0f} rows/s)")
    print(f"{'engine / form':34s} {'1 conn req/s':>12s} {'p50':>7s} {'p99':>7s}   {'8 conns req/s':>13s} {'p50':>7s} "
          f"{'p99':>7s}  {'batch':>5s}  {'ceiling':>8s}")  # fmt: skip
    ceilings = {rows: rows * 1000 / ms for rows, ms in ort_ms.items()}  # ORT's own rows/s by batch size

    def ceiling_at(batch: float) -> float:  # the nearest batch size timed
        return ceilings[min(ceilings, key=lambda rows: abs(rows - batch))]

    for (engine, form), cell in cells.items():
        ceiling = ""
        if engine == "ours":
            ceiling = f"{cell.median(cell.rps, 8) / ceiling_at(cell.batch):.2f}x"
        label, batch = f"{engine} / {FORMS[form].title}", f"{cell.batch:5.2f}" if engine == "ours" else ""
        print(
            f"{label:34s} {cell.median(cell.rps, 1):12.0f} {cell.median(cell.p50, 1):7.3f} "
            f"{cell.median(cell.p99, 1):7.3f}   {cell.median(cell.rps, 8):13.0f} {cell.median(cell.p50, 8):7.3f} "
            f"{cell.median(cell.p99, 8):7.3f}  {batch:>5s}  {ceiling:>8s}"
        )
    print("RSS after the load: " + ", ".join(f"{engine} {mb:.0f} MB" for engine, mb in rss.items()))
    print("ORT alone, rows/s by batch: " + ", ".join(f"{rows}: {v:.0f}" for rows, v in sorted(ceilings.items())))
    print(f"ceiling = req/s at 8 connections / ORT's own rows/s at the mean batch the server formed "
          f"(target >= {TARGETS['ceiling']:.2f}x)")  # fmt: skip
    for (engine, form), cell in cells.items():
        if engine == "ours":
            overhead = cell.median(cell.p50, 1) - single
            verdict = "met" if overhead <= OVERHEAD_TARGET_MS else "MISSED"
            print(f"overhead p50 over session.run, {FORMS[form].title}, difference of medians: {overhead:.3f} ms "
                  f"(target <= {OVERHEAD_TARGET_MS:g} ms: {verdict})")  # fmt: skip

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float:
        return float(np.median(np.array(cells[a].rps[8]) / np.array(cells[b].rps[8])))

    json_rest = ("ours", "rest-json")
    for form in ("rest-binary", "grpc"):
        if ("ours", form) in cells and json_rest in cells:
            target = TARGETS["forms vs our JSON REST (text, 8 conns)"]
            r = ratio(("ours", form), json_rest)
            print(f"ours {FORMS[form].title} / ours JSON REST at 8 connections: {r:.2f}x (on text: >= {target:g}x)")
    theirs = [key for key in cells if key[0].startswith("mlserver")]
    if theirs:
        best_theirs = np.max([cells[key].rps[8] for key in theirs], axis=0)
        best_ours = np.max([cells[key].rps[8] for key in cells if key[0] == "ours"], axis=0)
        r = float(np.median(best_ours / best_theirs))
        target = TARGETS.get(name)
        verdict = f" (target >= {target:g}x: {'met' if r >= target else 'MISSED'})" if target else ""
        print(f"ours' best form / MLServer's best (form and batching) at 8 connections: {r:.2f}x{verdict}")
