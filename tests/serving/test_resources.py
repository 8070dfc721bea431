"""CPU limit detection from cgroup v2 / v1 files (fake cgroup trees) and the thread count it yields."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.errors import ModelError
from serving.model import choose_providers
from serving.resources import available_cpus, cgroup_cpu_limit


def test_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    assert available_cpus(tmp_path) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_fall_back_to_the_cpus_we_may_use(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing") is None
    assert available_cpus(tmp_path / "missing") == len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("garbage")
    assert cgroup_cpu_limit(tmp_path) is None


def test_providers() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert choose_providers("cuda")[0] == "CUDAExecutionProvider"
    else:  # asked for CUDA explicitly and it is not there: refuse rather than silently run on CPU
        with pytest.raises(ModelError, match="cuda"):
            choose_providers("cuda")
