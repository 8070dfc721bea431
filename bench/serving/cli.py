"""Command line of the serving benchmark: parses the flags, then runs the MLPs, an example, or the soak."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import onnxruntime as ort

import bench.serving
from bench.load_generator import wrk_executable
from bench.serving.examples import EXAMPLES, run_example
from bench.serving.forms import FORMS
from bench.serving.image import NAME as IMAGE
from bench.serving.image import run_image
from bench.serving.measure import Settings
from bench.serving.mlp import run_mlps
from bench.serving.soak import soak
from serving.resources import available_cpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="serving_bench.py", description=bench.serving.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput window")
    ap.add_argument("--requests", type=int, default=2000, help="latency samples per engine")
    ap.add_argument("--workers", type=int, default=0, help="compute workers (0: the server's default)")
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: the server's default)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of alternating measurement windows")
    ap.add_argument("--only", choices=["overhead", "batching", "mlserver", "forms"], help="run one part")
    ap.add_argument("--mlserver", type=Path, help="mlserver executable (its own venv) to compare against")
    ap.add_argument(
        "--example",
        choices=[*sorted(EXAMPLES), IMAGE],
        help="run on this example's int8-dynamic artifact (image: a synthetic large-tensor model, forms only)",
    )
    ap.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="soak the text example (alone)")
    ap.add_argument(
        "--form",
        action="append",
        choices=sorted(FORMS),
        help="request form to measure, repeatable (default: every form; the soak uses the first)",
    )
    return ap.parse_args(argv)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    wrk_executable()  # fail before any server starts
    # The server's defaults (serving/model.py Threads): one worker per CPU, the CPUs shared among them.
    workers = args.workers or available_cpus()
    threads = args.threads or max(1, available_cpus() // workers)
    forms = [FORMS[name] for name in args.form or FORMS]
    print(f"cpus available: {available_cpus()}  compute workers: {workers}  ort threads: {threads}  "
          f"onnxruntime {ort.__version__}")  # fmt: skip
    print(f"load average at start: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        run = Settings(Path(tmp), threads, args.rounds, args.seconds, args.requests, args.mlserver, workers)
        if args.soak > 0:
            soak(args.soak, forms[0], run)
        elif args.example == IMAGE:
            run_image(forms, run)
        elif args.example:
            run_example(args.example, forms, args.only, run)
        else:
            run_mlps(forms, args.only, run)
    print(f"load average at end: {load_average()}")
