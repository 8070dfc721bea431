"""Hardware-aware int8: which CPU the model is quantized for, and whether its weights are 7-bit.

ONNX Runtime's u8s8 int8 GEMMs can saturate on x86 without VNNI (VPMADDUBSW); 7-bit weights
(``reduce_range``) avoid that, and cost accuracy for nothing on VNNI/AMX and ARM. Detection lives in
serving.cpu because the serving image, which only holds serving/, reads the same flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from optimize.recipe import QuantizeSpec
from serving import cpu


@dataclass(frozen=True)
class Int8Plan:
    """What the int8 step builds for; written to report.json as ``int8``, where the server compares it."""

    target_cpu: str
    detected: bool  # True when target_cpu was "auto" and came from this machine's flags
    vnni: bool
    reduce_range: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_int8(spec: QuantizeSpec, cpuinfo: str | None = None, machine: str | None = None) -> Int8Plan:
    """The plan for ``spec``; ``cpuinfo``/``machine`` stand in for this machine's when target_cpu is "auto"."""
    detected = spec.target_cpu == "auto"
    target = cpu.detect_isa(cpuinfo, machine) if detected else spec.target_cpu
    vnni = cpu.has_vnni(target)
    if isinstance(spec.reduce_range, bool):
        stated = "true" if spec.reduce_range else "false"
        return Int8Plan(target, detected, vnni, spec.reduce_range, f"reduce_range: {stated} as the recipe states")
    reduce_range = cpu.saturates(target)
    return Int8Plan(target, detected, vnni, reduce_range, _why_auto(target, vnni, reduce_range))


def _why_auto(target: str, vnni: bool, reduce_range: bool) -> str:
    if reduce_range:
        return f"auto: {target} has no VNNI, so ONNX Runtime's u8s8 GEMMs can saturate; weights are 7-bit"
    if vnni:
        return f"auto: {target} has VNNI; 8-bit weights"
    return f"auto: {target} is not x86, so its int8 kernels do not saturate; 8-bit weights"
