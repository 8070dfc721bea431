"""Shared plumbing for example builds: deterministic seeds, skip-if-complete,
atomic publish (build in a temporary sibling, rename into place)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from optimize.atomic import staged_dir
from optimize.report import sha256

MANIFEST = "MANIFEST.json"
CODE_KEY = "_code"


def code_digest(package: str) -> str:
    """The example's own sources plus this file: edit the model or the training
    and the build is stale."""
    here = Path(__file__).resolve().parent
    files = [here / "_build.py", *sorted((here / package).glob("*.py"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def is_complete(out: Path, files: tuple[str, ...], code: str = "") -> bool:
    """True when every expected file exists and matches the manifest written last."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())
    except ValueError:
        return False
    if recorded.get(CODE_KEY, "") != code:
        return False
    return all((out / f).is_file() and recorded.get(f) == sha256(out / f) for f in files)


def publish(out: Path, files: tuple[str, ...], write: Callable[[Path], None], code: str = "") -> None:
    """Run write(staging), record a manifest, and swap the staging directory into place."""
    with staged_dir(out) as staging:
        write(staging)
        missing = [f for f in files if not (staging / f).is_file()]
        if missing:
            raise RuntimeError(f"build did not write {missing}")
        manifest = {CODE_KEY: code, **{f: sha256(staging / f) for f in files}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def seed_everything(seed: int = 0, threads: int = 2) -> None:
    """Same seed and thread count give the same weights on the same machine
    (float reductions depend on the thread count)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def main(description: str, package: str, files: tuple[str, ...], write: Callable[[Path], None]) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a shared machine spinning
    # threads stall training many times over. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", type=Path, default=Path("examples") / package / "build")
    ap.add_argument("--force", action="store_true", help="rebuild even when the outputs are complete")
    args = ap.parse_args()
    code = code_digest(package)
    if not args.force and is_complete(args.out, files, code):
        print(f"{args.out}: up to date")
        return 0
    publish(args.out, files, write, code)
    print(f"{args.out}: built {', '.join(files)}")
    return 0
