"""How many CPUs this container may use: cgroup v2 ``cpu.max``, cgroup v1 CFS quota, else the affinity mask."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (e.g. 1.5), or None when unlimited or unknown."""
    v2 = _read(root / "cpu.max")  # "max 100000" or "150000 100000"
    if v2:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        quota_s, period_s = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
        if quota_s and period_s:
            try:
                quota, period = int(quota_s), int(period_s)
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs to size thread pools for: the quota rounded up, capped by the CPUs we may run on."""
    try:
        visible = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        visible = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is None:
        return max(1, visible)
    return max(1, min(visible, math.ceil(limit)))
