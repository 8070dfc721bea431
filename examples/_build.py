"""Shared plumbing for example builds: deterministic seeds, skip-if-complete,
atomic publish (build in a temporary sibling, rename into place)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MANIFEST = "MANIFEST.json"
CODE_KEY = "_code"


def code_digest(package: str) -> str:
    """The example's own sources plus this file: edit the model or the training
    and the build is stale."""
    here = Path(__file__).resolve().parent
    files = [here / "_build.py", *sorted((here / package).glob("*.py"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    return all((out / f).is_file() and recorded.get(f) == _sha(out / f) for f in files)


def publish(out: Path, files: tuple[str, ...], write: Callable[[Path], None], code: str = "") -> None:
    """Run write(tmpdir), record a manifest, and swap tmpdir into place."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published directory is not
    try:
        write(tmp)
        missing = [f for f in files if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"build did not write {missing}")
        manifest = {CODE_KEY: code, **{f: _sha(tmp / f) for f in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
