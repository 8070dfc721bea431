"""Download the serving image's wheels (its CPU lock, for cp311 manylinux x86_64) into a directory, for
builds that cannot reach a package index (the `image.wheelhouse` stack key, the container test).

    python scripts/wheelhouse.py [DIR]      default .cache/wheelhouse/serving-cpu (`make wheelhouse`)

Idempotent: DIR records a key over the lock and the platforms; while it matches, nothing is downloaded.
A new download goes to a staging directory that replaces DIR only when complete. pip checks every wheel
against the lock's hashes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "serving" / "requirements.txt"
DEFAULT_DIR = REPO / ".cache" / "wheelhouse" / "serving-cpu"
# pip does not widen --platform to older manylinux tags by itself: list every glibc up to bookworm's 2.36.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(36, 4, -1)] + ["manylinux2014_x86_64"]
KEY_FILE = ".key"


def key() -> str:
    return hashlib.sha256(LOCK.read_bytes() + json.dumps(PLATFORMS).encode()).hexdigest()[:16]


def is_current(out: Path) -> bool:
    return (out / KEY_FILE).is_file() and (out / KEY_FILE).read_text() == key()


def require(out: Path = DEFAULT_DIR) -> Path:
    """``out`` when it holds the current lock's wheels; else exit naming the install step. Tests call
    this, never ``fill``: installing may reach the package index, a test may not."""
    if not is_current(out):
        raise SystemExit(f"wheelhouse: {out.relative_to(REPO) if out.is_relative_to(REPO) else out} is missing "
                         f"or older than {LOCK.relative_to(REPO)}; run `make wheelhouse`")
    return out


def fill(out: Path = DEFAULT_DIR) -> Path:
    """Make ``out`` hold exactly the lock's wheels; returns it."""
    if is_current(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / f".{out.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download at a time; a second caller then finds it done
        if is_current(out):
            return out
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary=:all:", "--no-deps", "--require-hashes", "--python-version", "3.11",
                   "--implementation", "cp", "--abi", "cp311", "-r", str(LOCK), "-d", str(staging)]
            for platform in PLATFORMS:
                cmd += ["--platform", platform]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise SystemExit(f"wheelhouse: pip download of {LOCK.relative_to(REPO)} failed: {last}")
            (staging / KEY_FILE).write_text(key())
            if out.exists():
                shutil.rmtree(out)
            staging.rename(out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    print(fill(target.resolve()))
