"""Latency benchmark: each engine in its own process, same thread count, warm-up first.

Run as a worker: python -m optimize.benchmark --engine torch|onnx --model PATH
--inputs NPZ --threads N --batch-sizes 1,8 --warmup W --iterations I
[--factory M:F]; prints one JSON line {"b1": {"p50": ms, "p99": ms}, ...}.
`--engine factory --factory M:F` (no --model) times the torch module that
calling M:F() returns, as it is: a pretrained model that loads its own
weights, or one a user has transformed (e.g. torch.ao dynamic quantization).
`--no-spin` (run_engine(spin=False)) keeps idle threads from busy-waiting in
both runtimes: OMP_WAIT_POLICY=PASSIVE for torch's OpenMP pool and
session.intra_op.allow_spinning=0 for ORT's. Off by default (both runtimes'
defaults spin); on a machine shared with other work, spinning threads whose
partner is descheduled slow torch far more than ORT (4-150x at 2 threads).
A separate process per engine keeps one runtime's thread pools, allocator
and import side effects from skewing the other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from optimize.errors import OptimizeError


def measure(run: Any, arrays: list[np.ndarray], warmup: int, iterations: int) -> dict[str, float]:
    for _ in range(warmup):
        run(*arrays)
    times = np.empty(iterations)
    for i in range(iterations):
        t = time.perf_counter()
        run(*arrays)
        times[i] = time.perf_counter() - t
    return {
        "p50": round(float(np.percentile(times, 50) * 1000), 4),
        "p99": round(float(np.percentile(times, 99) * 1000), 4),
    }


def thread_env(threads: int, spin: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    if not spin:
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # read when libgomp loads: it has to be set before the worker starts
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    # The worker must import the same code (and any --factory module) as the caller.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def run_engine(
    engine: str,
    model: Path | None,
    inputs: Path,
    threads: int,
    batch_sizes: tuple[int, ...],
    warmup: int,
    iterations: int,
    factory: str | None = None,
    timeout: float = 900,
    spin: bool = True,
) -> dict[str, dict[str, float]]:
    """Benchmark one engine in a fresh process; returns {"b1": {"p50","p99"}, ...}.
    `engine` "factory" takes no model file: it times the module `factory()` returns."""
    cmd = [
        sys.executable, "-m", "optimize.benchmark", "--engine", engine, *(["--model", str(model)] if model else []),
        "--inputs", str(inputs), "--threads", str(threads),
        "--batch-sizes", ",".join(map(str, batch_sizes)), "--warmup", str(warmup), "--iterations", str(iterations),
    ]  # fmt: skip
    if factory:
        cmd += ["--factory", factory]
    if not spin:
        cmd.append("--no-spin")
    env = thread_env(threads, spin)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise OptimizeError(f"benchmark worker for {engine} failed: {tail}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _worker(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m optimize.benchmark")
    ap.add_argument("--engine", choices=["torch", "onnx", "factory"], required=True)
    ap.add_argument("--model", type=Path, help="the model file (not for --engine factory)")
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--factory")
    ap.add_argument("--no-spin", action="store_true", help="ORT threads sleep when idle (torch: OMP_WAIT_POLICY)")
    args = ap.parse_args(argv)
    if args.engine == "factory" and not args.factory:
        ap.error("--engine factory needs --factory module:callable")
    if args.engine != "factory" and args.model is None:
        ap.error(f"--engine {args.engine} needs --model")
    with np.load(args.inputs, allow_pickle=False) as npz:
        arrays = [npz[k] for k in npz.files]  # saved in the model's input order
    if args.engine == "torch":
        import torch

        from optimize import sources
        from optimize.runtime import torch_runner

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        src = sources.load(args.model, args.factory)
        run = torch_runner(src.runner())
    elif args.engine == "factory":
        import torch

        from optimize.runtime import torch_runner
        from optimize.sources import load_factory

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        module = load_factory(args.factory)()
        if not isinstance(module, torch.nn.Module):
            raise SystemExit(f"factory '{args.factory}' returned {type(module).__name__}, not a torch.nn.Module")
        run = torch_runner(module.eval())
    else:
        from optimize.runtime import ort_runner, ort_session

        sess = ort_session(args.model, args.threads, spin=not args.no_spin)
        run = ort_runner(sess, [str(i) for i in range(len(arrays))])
    result = {}
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        idx = np.arange(bs) % len(arrays[0])
        result[f"b{bs}"] = measure(run, [np.ascontiguousarray(a[idx]) for a in arrays], args.warmup, args.iterations)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
