"""Resolve every requirements input (*.in) into its lock (*.txt): every package pinned, with hashes.

    python scripts/lock.py            rewrite the locks (what `make lock` runs)
    python scripts/lock.py --check    exit 1 naming each lock that differs from a fresh resolution

uv resolves; EXCLUDE_NEWER makes a resolution repeatable (only files uploaded before it count), so
`--check` (`make lock-check`; .github/workflows/locks.yml runs `make lock` weekly) says whether each
committed lock is still exactly what its input gives. Not a test: the index moves on its own.
To take newer releases, move EXCLUDE_NEWER forward and run `make lock`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXCLUDE_NEWER = "2026-12-01T00:00:00Z"


@dataclass(frozen=True)
class Lock:
    source: str  # the input, relative to the repo
    output: str  # the lock it resolves to
    python: str
    platform: str | None = None  # None: a universal lock (markers for every platform)
    no_deps: bool = False  # only the packages named: for packages whose files are used, not their code

    def command(self, uv: str, output: Path) -> list[str]:
        target = ["--universal"] if self.platform is None else ["--python-platform", self.platform]
        target += ["--no-deps"] if self.no_deps else []
        return [uv, "pip", "compile", "--quiet", "--generate-hashes", "--python-version", self.python, *target,
                "--exclude-newer", EXCLUDE_NEWER, "--custom-compile-command", "make lock",
                self.source, "--output-file", str(output)]


# Order matters: the serving locks are constrained to the versions in requirements.txt.
LOCKS = (
    Lock("requirements-dev.in", "requirements.txt", "3.11"),  # .venv: program, pipeline, tests
    # Published models' weights for the tests (.venv too), without the packages' pins (torch<2.3).
    Lock("requirements-fixtures.in", "requirements-fixtures.txt", "3.11", no_deps=True),
    Lock("requirements-checkov.in", "requirements-checkov.txt", "3.11"),  # .venv-checkov
    Lock("policy/requirements.in", "policy/requirements.txt", "3.11"),  # policy/.venv: the policy pack
    Lock("serving/requirements.in", "serving/requirements.txt", "3.11", "x86_64-manylinux_2_28"),  # CPU image
    # GPU image: the CUDA base image is Ubuntu 24.04, whose Python is 3.12.
    Lock("serving/requirements-gpu.in", "serving/requirements-gpu.txt", "3.12", "x86_64-manylinux_2_28"),
)


def find_uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        sys.exit("lock: uv is not installed; run `make test` once (it installs requirements.txt, uv included)")
    return uv


def resolve(lock: Lock, uv: str, output: Path) -> None:
    proc = subprocess.run(lock.command(uv, output), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"lock: resolving {lock.source} failed: {last}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with a fresh resolution, write nothing")
    args = parser.parse_args(argv)
    uv = find_uv()
    stale = []
    for lock in LOCKS:
        target = REPO / lock.output
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            # Into a new file: uv would start from an existing lock's pins, and --check must not.
            fresh = Path(tmp) / target.name
            resolve(lock, uv, fresh)
            if args.check:
                if not target.is_file() or fresh.read_text() != target.read_text():
                    stale.append(lock)
            else:
                fresh.replace(target)
                print(f"lock: {lock.source} -> {lock.output}")
    for lock in stale:
        print(f"lock: {lock.output} is not what {lock.source} resolves to; run `make lock`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
