"""The dependency locks: each satisfies its input, is fully pinned with hashes, is installed as it is, and
the serving image's locks carry the versions the tests ran with (and no torch). All offline: whether a
lock is still exactly what the index resolves today is `make lock-check`, not a test."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.lock import LOCKS, Lock

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


@pytest.mark.parametrize("lock", LOCKS, ids=[lock.output for lock in LOCKS])
def test_every_entry_is_one_exact_version_with_hashes(lock: Lock) -> None:
    found = entries(REPO / lock.output)
    # A resolved lock holds the inputs' dependencies too; a --no-deps one exactly what its input names.
    assert len(found) == len(inputs(REPO / lock.source)) if lock.no_deps else len(found) > 10
    for req, hashes in found:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{lock.output}: {req} is not an exact pin"
        assert hashes >= 1, f"{lock.output}: {req.name} has no hash"


def inputs(source: Path) -> list[Requirement]:
    """The requirements an input names, following `-r` includes (`-c` constraints are not requirements)."""
    out = []
    for line in source.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-c ")):
            continue
        if line.startswith("-r "):
            out += inputs(source.parent / line[3:].strip())
        else:
            out.append(Requirement(line))
    return out


def environment(lock: Lock) -> dict[str, str]:
    """The marker environment a lock is installed into: this interpreter for a universal lock, else the
    platform and Python it was resolved for."""
    if lock.platform is None:
        return {}
    return {"python_version": lock.python, "python_full_version": f"{lock.python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.output)
def test_each_input_requirement_is_satisfied_by_its_lock(lock: Lock) -> None:
    # Offline on purpose: re-resolving against the live index (`make lock-check`) fails whenever the
    # index moves, whatever the code does. Editing an .in without `make lock` still fails here.
    env = environment(lock)
    locked: dict[str, list[Requirement]] = {}
    for req, _ in entries(REPO / lock.output):
        locked.setdefault(canonicalize_name(req.name), []).append(req)
    for req in inputs(REPO / lock.source):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        pinned = [r for r in locked.get(canonicalize_name(req.name), [])
                  if r.marker is None or r.marker.evaluate(env)]
        assert pinned, f"{lock.output} has no entry for {req.name} ({lock.source}); run `make lock`"
        (spec,) = pinned[0].specifier
        assert req.specifier.contains(spec.version, prereleases=True), (
            f"{lock.output} pins {req.name}=={spec.version}, {lock.source} asks for {req}; run `make lock`")


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
