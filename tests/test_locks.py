"""The dependency locks: each is exactly what its input resolves to, fully pinned with hashes, installed
as it is, and the serving image's locks carry the versions the tests ran with (and no torch)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.lock import LOCKS

REPO = Path(__file__).resolve().parents[1]
MAIN_LOCK = REPO / "requirements.txt"
SERVING_LOCKS = [REPO / "serving" / "requirements.txt", REPO / "serving" / "requirements-gpu.txt"]


def entries(lock: Path) -> list[tuple[Requirement, int]]:
    """(requirement, number of hashes) per entry; a backslash continues an entry on the next line."""
    out = []
    text = lock.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *hashes = line.split(" --hash=")
        out.append((Requirement(spec.strip()), len(hashes)))
    return out


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for req, _ in entries(lock):
        (spec,) = req.specifier
        found[canonicalize_name(req.name)] = spec.version
    return found


@pytest.mark.parametrize("lock", [lock.output for lock in LOCKS])
def test_every_entry_is_one_exact_version_with_hashes(lock: str) -> None:
    found = entries(REPO / lock)
    assert len(found) > 10
    for req, hashes in found:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{lock}: {req} is not an exact pin"
        assert hashes >= 1, f"{lock}: {req.name} has no hash"


@pytest.mark.slow
def test_each_lock_is_what_its_input_resolves_to() -> None:
    # A fresh resolution (uv, against the package index as of scripts/lock.py's EXCLUDE_NEWER) of every
    # input must give the committed lock byte for byte: editing an .in without `make lock` fails here.
    proc = subprocess.run([sys.executable, "scripts/lock.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def test_the_test_venv_has_exactly_the_locked_versions() -> None:
    for req, _ in entries(MAIN_LOCK):
        if req.marker is not None and not req.marker.evaluate():
            continue
        (spec,) = req.specifier
        assert metadata.version(req.name) == spec.version, f"{req.name}: locked {spec.version}"


@pytest.mark.parametrize("lock", SERVING_LOCKS, ids=lambda p: p.name)
def test_serving_locks_carry_the_tested_versions_and_no_torch(lock: Path) -> None:
    tested, image = pins(MAIN_LOCK), pins(lock)
    assert "torch" not in image and not any(name.startswith("nvidia-") for name in image)
    runtime = image.pop("onnxruntime-gpu", None) or image["onnxruntime"]
    assert runtime == tested["onnxruntime"]
    differ = {name: (version, tested[name]) for name, version in image.items()
              if name in tested and tested[name] != version}
    assert not differ, f"{lock.name} differs from requirements.txt (image, tested): {differ}"
    assert set(image) <= set(tested) | {"onnxruntime"}, "every image package is one the tests ran with"


def test_serving_gpu_lock_has_the_cpu_lock_packages() -> None:
    cpu, gpu = pins(SERVING_LOCKS[0]), pins(SERVING_LOCKS[1])
    cpu["onnxruntime-gpu"] = cpu.pop("onnxruntime")
    assert cpu == gpu
