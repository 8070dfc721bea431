"""Optimize benchmark: ratios measured side by side in one run.

    python bench/optimize_bench.py [--rounds 3] [--iterations 200] [--threads 2]

1. Builds the examples (skipped when up to date) and runs the pipeline CLI on
   them, one subprocess per build so each reports its own peak memory.
2. Measures latency of every engine, each in its own process with the same
   thread count, warm-up first, in interleaved rounds (engine A, B, C, A, B,
   C, ...) so load from other processes hits all alike. Per engine, the best
   (lowest) per-round p50 is used for the ratios: on a shared machine it is
   the least-contended estimate; the median of the rounds is printed too. The baseline is the text encoder as a plain
   torch nn.Module in eager mode (the state_dict + factory source).
3. Prints the ratios against the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimize.benchmark import run_engine  # noqa: E402
from optimize.recipe import PRESETS, BenchmarkSpec, GateSpec, QuantizeSpec, Recipe  # noqa: E402

TEXT_FACTORY = "examples.text.model:build"


def sh(*cmd: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def build(model: Path, recipe: Recipe, out: Path, val: Path, cal: Path, factory: str | None = None) -> dict:
    rfile = out.with_suffix(".yaml")
    rfile.write_text(recipe.to_yaml())
    cmd = [sys.executable, "-m", "optimize", "build", "--model", str(model), "--recipe", str(rfile), "--out", str(out),
           "--validation", str(val), "--calibration", str(cal)]  # fmt: skip
    if factory:
        cmd += ["--factory", factory]
    sh(*cmd)
    return json.loads((out / "report.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    text, digits = ROOT / "examples/text/build", ROOT / "examples/digits/build"
    print(sh(sys.executable, "-m", "examples.text.train", "--out", str(text)).strip())
    print(sh(sys.executable, "-m", "examples.digits.train", "--out", str(digits)).strip())

    quick = BenchmarkSpec(threads=args.threads, warmup=5, iterations=20)
    gate = GateSpec(max_accuracy_drop=0.01, min_agreement=0.99)
    variants = {
        "ort-fp32": Recipe(name="fp32", quantize=QuantizeSpec(mode="none"), benchmark=quick, gate=gate),
        "int8-dynamic": Recipe(
            name="int8-dynamic", quantize=QuantizeSpec(mode="dynamic_int8", per_channel=False), benchmark=quick
        ),
        "int8-dynamic-pc": Recipe(
            name="int8-dynamic-pc", quantize=QuantizeSpec(mode="dynamic_int8", per_channel=True), benchmark=quick
        ),
        "int8-static": Recipe(
            name="int8-static", quantize=QuantizeSpec(mode="static_int8", per_channel=False), benchmark=quick
        ),
    }
    with tempfile.TemporaryDirectory(prefix="optimize-bench-") as tmp:
        work = Path(tmp)
        reports = {}
        for key, recipe in variants.items():
            reports[key] = build(
                text / "model_state.pt", recipe, work / key, text / "validation.npz", text / "calibration.npz",
                TEXT_FACTORY,
            )  # fmt: skip
        digits_recipe = PRESETS["prune50-int8"].model_copy(update={"benchmark": quick})
        digits_report = build(
            digits / "model.pt", digits_recipe, work / "digits", digits / "validation.npz", digits / "calibration.npz"
        )

        with np.load(text / "validation.npz") as v:
            np.savez(work / "inputs.npz", v["x"][:8])
        engines = {"torch-eager": ("torch", text / "model_state.pt", TEXT_FACTORY)}
        engines.update({k: ("onnx", work / k / "model.onnx", None) for k in variants})
        p50: dict[str, dict[str, list[float]]] = {k: {"b1": [], "b8": []} for k in engines}
        for _ in range(args.rounds):
            for key, (engine, path, factory) in engines.items():
                res = run_engine(engine, path, work / "inputs.npz", args.threads, (1, 8), 20, args.iterations, factory)
                for b in ("b1", "b8"):
                    p50[key][b].append(res[b]["p50"])
    med = {k: {b: min(v) for b, v in d.items()} for k, d in p50.items()}
    median = {k: {b: statistics.median(v) for b, v in d.items()} for k, d in p50.items()}
    base = med["torch-eager"]

    print(f"\ntext encoder (examples/text, 4 layers, hidden 256, seq 64), {args.threads} threads, "
          f"best p50 of {args.rounds} interleaved rounds x {args.iterations} iterations "
          "(median of rounds in brackets)")  # fmt: skip
    print(f"{'engine':<18}{'b1 p50 ms':>11}{'b1 ratio':>10}{'(median)':>10}{'b8 p50 ms':>11}{'b8 ratio':>10}"
          f"{'size ratio':>12}{'agreement':>11}{'peak MiB':>10}")  # fmt: skip
    for key in engines:
        rep = reports.get(key)
        size = f"{rep['size_ratio']:.3f}" if rep else "1.000"
        agree = f"{rep['accuracy']['agreement'] * 100:.2f}%" if rep else "-"
        peak = f"{rep['peak_rss_bytes'] / 2**20:.0f}" if rep else "-"
        mid = f"({median[key]['b1'] / median['torch-eager']['b1']:.3f})"
        print(f"{key:<18}{med[key]['b1']:>11.3f}{med[key]['b1'] / base['b1']:>10.3f}{mid:>10}{med[key]['b8']:>11.3f}"
              f"{med[key]['b8'] / base['b8']:>10.3f}{size:>12}{agree:>11}{peak:>10}")  # fmt: skip

    int8 = min(("int8-dynamic", "int8-dynamic-pc", "int8-static"), key=lambda k: med[k]["b1"])
    acc = digits_report["accuracy"]
    checks = [
        (f"text {int8} vs torch eager, b1 p50 ratio <= 0.30", med[int8]["b1"] / base["b1"], 0.30, "<="),
        (f"text {int8} size ratio <= 0.30", reports[int8]["size_ratio"], 0.30, "<="),
        (f"text {int8} argmax agreement >= 0.99", reports[int8]["accuracy"]["agreement"], 0.99, ">="),
        ("text ORT fp32 vs torch eager, b1 p50 ratio <= 0.50", med["ort-fp32"]["b1"] / base["b1"], 0.50, "<="),
        ("digits prune50-int8 top-1 drop (points) <= 1", -acc["delta"] * 100, 1.0, "<="),
        (
            "pipeline peak memory (MiB) <= 2048",
            max(r["peak_rss_bytes"] for r in [*reports.values(), digits_report]) / 2**20,
            2048,
            "<=",
        ),
    ]
    print(f"\ndigits prune50-int8: top-1 {acc['baseline']:.4f} -> {acc['optimized']:.4f}, "
          f"sparsity {digits_report['sparsity']:.3f}, size ratio {digits_report['size_ratio']:.3f}; "
          f"{digits_report['pruning']['latency']['note']}")  # fmt: skip
    print("\ntargets:")
    for label, value, limit, op in checks:
        ok = value <= limit if op == "<=" else value >= limit
        print(f"  [{'met' if ok else 'MISSED'}] {label}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
