"""Every request form side by side on one example (issue 26's table): our server over JSON REST, binary REST
and gRPC (one process serving all three), MLServer over the forms it serves (REST JSON and gRPC, adaptive
batching on and off, and one inference process per compute worker of ours: its best one counts), and
in-process ONNX Runtime as the ceiling.

Each (engine, form) gets a closed-loop window at 1 and at 8 connections per round (wrk for REST, ghz for
gRPC: C and Go clients, one CPU each), rounds alternating; figures are medians over rounds, ratios medians
of per-round ratios. The ceiling is ORT's own rows/s (in-process ``session.run`` on one session, called
by as many threads at once as our server has compute workers, each run over the same intra-op threads;
timed in every round at 1, 2, 4 and 8 rows) at the batch size nearest the mean our server formed at 8
connections on that form; the overhead is the 1-connection p50 minus ``session.run``'s p50 at batch 1
(a difference of medians).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.serving.forms import FORMS, RequestForm
from bench.serving.measure import Settings, pct, session_latency, session_rows_per_s
from bench.serving.servers import MLServer, Server, ServerProcess

LOADS = (1, 8)  # connections
CEILING_ROWS = (1, 2, 4, 8)  # batch sizes ORT is timed at in-process, every round
TARGETS = {"forms vs our JSON REST (text, 8 conns)": 1.3, "digits": 2.5, "text": 1.5, "ceiling": 0.90}
OVERHEAD_TARGET_MS = 0.30
ONE_WORKER = "ours 1 worker"


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
    with ExitStack() as stack:
        engines: dict[str, ServerProcess] = {
            "ours": stack.enter_context(Server(model_dir, run.root / "forms.log", **run.ours, grpc_port=0))
        }
        one_run = replace(run, workers=1, threads=run.cpus)  # one batch at a time over every CPU
        if run.workers > 1:  # what the server did before it had compute workers, side by side
            engines[ONE_WORKER] = stack.enter_context(
                Server(model_dir, run.root / "forms-1.log", **one_run.ours, grpc_port=0)
            )
        if run.mlserver:
            # (label, adaptive batching, threads, parallel inference processes)
            configs = [("mlserver batching", True, run.cpus, 0), ("mlserver no batching", False, run.cpus, 0)]
            if run.workers > 1:
                configs.append((f"mlserver {run.workers} workers", True, run.threads, run.workers))
            for label, batch, threads, workers in configs:
                work = run.root / label.replace(" ", "-")
                engines[label] = stack.enter_context(
                    MLServer(run.mlserver, model_dir, work, model, threads, batch, workers)
                )
        cells: dict[tuple[str, str], Cell] = {}
        requests = {form.name: form.encode(model, inputs) for form in forms}
        for engine, server in engines.items():
            for form in forms:
                port = form.port(server)
                if port:
                    form.load(port, requests[form.name], 8, 1)  # warm-up; also proves the engine answers it
                    cells[(engine, form.name)] = Cell()
        single_ms: list[float] = []  # session.run p50 at batch 1, per round
        ort_rows: dict[int, list[float]] = {rows: [] for rows in CEILING_ROWS}  # ORT's rows/s per round
        ort_rows_one: dict[int, list[float]] = {rows: [] for rows in CEILING_ROWS}  # ... one run at a time
        for _ in range(run.rounds):
            single_ms.append(pct(session_latency(model_dir, run.threads, 100, inputs), 50))
            for rows in CEILING_ROWS:  # in the rounds, so the machine's noise hits the ceiling alike
                feeds = {k: np.ascontiguousarray(np.repeat(x, rows, axis=0)) for k, x in inputs.items()}
                window = min(1.0, run.seconds / 2)
                ort_rows[rows].append(session_rows_per_s(model_dir, run, feeds, window))
                if run.workers > 1:
                    ort_rows_one[rows].append(session_rows_per_s(model_dir, one_run, feeds, window))
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
    ceilings = {rows: float(np.median(v)) for rows, v in ort_rows.items()}
    report(name, float(np.median(single_ms)), ceilings, cells, rss, run)
    if run.workers > 1:
        one = {rows: float(np.median(v)) for rows, v in ort_rows_one.items()}
        print(f"ORT alone, one run at a time over {run.cpus} threads, rows/s by batch: "
              + ", ".join(f"{rows}: {v:.0f}" for rows, v in sorted(one.items()))
              + f"; {run.workers} runs at once / one: "
              + ", ".join(f"{ceilings[rows] / one[rows]:.2f}x" for rows in sorted(one)))  # fmt: skip
        for form in forms:
            if (ONE_WORKER, form.name) in cells:
                r = float(np.median(np.array(cells[("ours", form.name)].rps[8])
                                    / np.array(cells[(ONE_WORKER, form.name)].rps[8])))  # fmt: skip
                print(f"ours {run.workers} compute workers / 1 worker x {run.cpus} threads, {form.title} at 8 "
                      f"connections: {r:.2f}x")  # fmt: skip


def report(
    name: str,
    single: float,
    ceilings: dict[int, float],
    cells: dict[tuple[str, str], Cell],
    rss: dict[str, float],
    run: Settings,
) -> None:
    """``single``: in-process session.run p50 at batch 1 (ms); ``ceilings``: ORT's own rows/s by batch size
    (medians over rounds)."""
    print(
        f"\n## request forms ({name}; {run.rounds} rounds of {run.seconds:g} s per window; "
        f"{run.workers} compute workers x {run.threads} ORT threads)"
    )
    print(f"in-process session.run, batch 1: p50 {single:.3f} ms")
    print(f"{'engine / form':34s} {'1 conn req/s':>12s} {'p50':>7s} {'p99':>7s}   {'8 conns req/s':>13s} {'p50':>7s} "
          f"{'p99':>7s}  {'batch':>5s}  {'ceiling':>8s}")  # fmt: skip

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
    print(f"ORT alone ({run.workers} callers at once), rows/s by batch: "
          + ", ".join(f"{rows}: {v:.0f}" for rows, v in sorted(ceilings.items())))  # fmt: skip
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
