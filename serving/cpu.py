"""Which int8 ISA this CPU offers, read from /proc/cpuinfo (stdlib only: it runs in the serving image).

Why it matters: on x86-64 without VNNI, ONNX Runtime's u8s8 int8 GEMMs use VPMADDUBSW, whose 16-bit
intermediate sums can saturate; 7-bit weights (``reduce_range``) avoid it. VNNI and AMX accumulate in
32 bits, and ORT's ARM kernels (sdot/udot, or widening multiplies) do not saturate this way either.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
# Best first: the first flag present names the level (Sapphire Rapids has avx512_vnni too, but is "amx").
LEVELS = (
    ("amx_int8", "amx"),
    ("avx512_vnni", "avx512-vnni"),
    ("avx_vnni", "avx-vnni"),
    ("avx512bw", "avx512"),
    ("avx512f", "avx512"),
    ("avx2", "avx2"),
)
VNNI_ISAS = frozenset({"amx", "avx512-vnni", "avx-vnni"})
X86_ISAS = VNNI_ISAS | {"avx512", "avx2", "x86-64"}
ARM_MACHINES = frozenset({"aarch64", "arm64"})
X86_MACHINES = frozenset({"x86_64", "amd64"})  # platform.machine(): Linux/macOS, Windows ("AMD64")


def read_cpuinfo(path: Path = CPUINFO) -> str:
    """The text of /proc/cpuinfo, or "" where there is none (macOS, Windows, a locked-down sandbox)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """Feature flags of the first processor: the x86 ``flags`` line or the ARM ``Features`` line."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def isa_level(cpuinfo: str, machine: str) -> str:
    """The int8 ISA level (a recipe ``target_cpu`` name); else "x86-64", the machine name or "unknown"."""
    arch = machine.strip().lower()
    if arch in ARM_MACHINES:
        return "arm64"
    flags = cpu_flags(cpuinfo)
    for flag, name in LEVELS:
        if flag in flags:
            return name
    return "x86-64" if arch in X86_MACHINES else arch or "unknown"


def detect_isa(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """``isa_level`` of this machine; either input can be given instead (tests)."""
    return isa_level(read_cpuinfo() if cpuinfo is None else cpuinfo, platform.machine() if machine is None else machine)


def has_vnni(isa: str) -> bool:
    """VNNI-class int8 dot products on x86 (VNNI, AVX-VNNI, AMX)."""
    return isa in VNNI_ISAS


def saturates(isa: str) -> bool:
    """Whether ORT's u8s8 int8 GEMMs can saturate here: x86 without VNNI."""
    return isa in X86_ISAS and not has_vnni(isa)


def describe(isa: str) -> str:
    """``isa`` with what it means for int8, for logs: "avx2 (no VNNI)", "amx (VNNI)", "arm64"."""
    if has_vnni(isa):
        return f"{isa} (VNNI)"
    return f"{isa} (no VNNI)" if isa in X86_ISAS else isa


def build_mismatch(int8: Any, isa: str) -> str | None:
    """A warning when a model built with 8-bit weights for a CPU that does not saturate serves on one that does.

    ``int8`` is report.json's ``int8`` entry (optimize.hardware.Int8Plan.to_dict()); anything else is ignored.
    """
    if not isinstance(int8, dict) or int8.get("reduce_range") is not False:
        return None
    built = int8.get("target_cpu")
    if not isinstance(built, str) or saturates(built) or not saturates(isa):
        return None
    return (
        f"model was built for {describe(built)} with 8-bit weights and runs on {describe(isa)}: "
        f"ONNX Runtime's u8s8 int8 GEMMs can saturate here; rebuild with quantize.target_cpu: {_target(isa)}"
    )


def _target(isa: str) -> str:
    return isa if isa != "x86-64" else "avx2"  # x86-64 is no recipe target; avx2 plans the same 7-bit weights
