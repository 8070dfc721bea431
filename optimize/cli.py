"""`python -m optimize build ...`: exit 0 on success, non-zero with one line otherwise."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from optimize.errors import GateFailed, OptimizeError
from optimize.recipe import RecipeError, load_recipe

EXIT_BAD_INPUT = 2
EXIT_GATE = 3


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m optimize", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="optimize a model into DIR/model.onnx + DIR/report.json")
    b.add_argument("--model", type=Path, required=True, help=".pt2, TorchScript, state_dict (.pt + --factory) or .onnx")
    b.add_argument("--recipe", required=True, help="preset name or a YAML/JSON recipe file")
    b.add_argument("--out", type=Path, required=True, help="output directory (replaced atomically)")
    b.add_argument("--validation", type=Path, help=".npz held-out set: x (or one array per input) and optional y")
    b.add_argument("--calibration", type=Path, help=".npz calibration set for static int8 (and fine-tuning)")
    b.add_argument("--training", type=Path, help=".npz rows to fine-tune on (finetune, distill); no labels needed")
    b.add_argument("--factory", help="module:callable that builds the architecture for a state_dict")
    b.add_argument("--name", help="model name in report.json (default: the model file's stem)")
    b.add_argument("--progress", choices=["auto", "on", "off"], default="auto", help="progress display on stderr")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        from optimize.pipeline import build

        with _progress(args.progress) as progress:
            report = build(
                args.model, recipe, args.out, args.validation, args.calibration,
                factory=args.factory, progress=progress, name=args.name, training=args.training,
            )  # fmt: skip
    except GateFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_GATE
    except (OptimizeError, RecipeError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    acc = report["accuracy"]
    lat = report["latency_ms"]
    from optimize.fidelity import task_lines

    for line in task_lines(report["fidelity"]):  # how each output was judged, and why
        print(f"task: {line}", file=sys.stderr)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "digest": report["digest"],
                "size_ratio": report["size_ratio"],
                "accuracy_delta": acc["delta"],
                "agreement": acc["agreement"],
                "p50_ms": {k: lat["optimized"][k]["p50"] for k in lat["optimized"]},
            }
        )
    )
    return 0


class _progress:
    """A rich spinner naming the running stage; silent when stderr is not a TTY. "stage: detail" (the
    fine-tune's steps) updates the running stage's line."""

    def __init__(self, mode: str) -> None:
        self.enabled = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self._status: Any = None
        self._last: str | None = None
        self._started = 0.0

    def __enter__(self) -> _progress | None:
        if not self.enabled:
            return None
        from rich.console import Console

        self.console = Console(stderr=True, log_path=False)
        self._status = self.console.status("starting")
        self._status.__enter__()
        return self

    def __call__(self, stage: str) -> None:
        if self._last and stage.startswith(f"{self._last}: "):
            if self._status is not None:
                self._status.update(f"{stage} ...")
            return
        self._done()
        self._last, self._started = stage, time.perf_counter()
        if self._status is not None:
            self._status.update(f"{stage} ...")

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            if exc[0] is None:
                self._done()
            self._status.__exit__(None, None, None)

    def _done(self) -> None:
        if self._last:
            self.console.log(f"[green]done[/] {self._last} ({time.perf_counter() - self._started:.1f} s)")
