"""The int8 plan: which CPU the model is quantized for, and whether its weights are 7-bit."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from optimize.hardware import Int8Plan, plan_int8
from optimize.recipe import QuantizeSpec, Recipe, RecipeError
from serving import cpu
from tests.serving.cpuinfo import GRAVITON3, HASWELL_XEON, ICE_LAKE_XEON, SAMPLES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "text", "machine", "isa"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_auto_detects_and_reduces_range_exactly_on_x86_without_vnni(name, text, machine, isa) -> None:
    plan = plan_int8(QuantizeSpec(), cpuinfo=text, machine=machine)
    assert plan.target_cpu == isa and plan.detected
    expected = isa in ("avx2", "avx512", "x86-64")
    assert plan.reduce_range is expected
    assert plan.vnni is (isa in ("amx", "avx512-vnni", "avx-vnni"))
    assert plan.why.startswith(f"auto: {isa} ")
    assert ("7-bit" in plan.why) is expected and ("8-bit" in plan.why) is not expected


def test_auto_reasons_read_as_one_sentence() -> None:
    assert plan_int8(QuantizeSpec(), HASWELL_XEON, "x86_64").why == (
        "auto: avx2 has no VNNI, so ONNX Runtime's u8s8 GEMMs can saturate; weights are 7-bit"
    )
    assert plan_int8(QuantizeSpec(), ICE_LAKE_XEON, "x86_64").why == "auto: avx512-vnni has VNNI; 8-bit weights"
    assert "not x86" in plan_int8(QuantizeSpec(), GRAVITON3, "aarch64").why


@pytest.mark.parametrize("target", ["avx2", "avx512", "avx512-vnni", "avx-vnni", "amx", "arm64"])
def test_stated_target_ignores_this_machine(target: str) -> None:
    # A Haswell build machine must not decide for a stated target.
    plan = plan_int8(QuantizeSpec(target_cpu=target), cpuinfo=HASWELL_XEON, machine="x86_64")
    assert plan.target_cpu == target and not plan.detected
    assert plan.reduce_range is (target in ("avx2", "avx512"))


@pytest.mark.parametrize("stated", [True, False])
def test_explicit_reduce_range_is_kept(stated: bool) -> None:
    for text, machine, target in ((HASWELL_XEON, "x86_64", "auto"), (ICE_LAKE_XEON, "x86_64", "avx2")):
        plan = plan_int8(QuantizeSpec(reduce_range=stated, target_cpu=target), cpuinfo=text, machine=machine)
        assert plan.reduce_range is stated
        assert plan.why == f"reduce_range: {str(stated).lower()} as the recipe states"


def test_plan_is_frozen_and_round_trips_json() -> None:
    plan = plan_int8(QuantizeSpec(target_cpu="amx"))
    d = json.loads(json.dumps(plan.to_dict()))
    assert d == {"target_cpu": "amx", "detected": False, "vnni": True, "reduce_range": False,
                 "why": "auto: amx has VNNI; 8-bit weights"}  # fmt: skip
    assert Int8Plan(**d) == plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.reduce_range = True  # type: ignore[misc]


def test_server_sees_no_mismatch_in_a_plan_for_its_own_cpu() -> None:
    # What optimize writes to report.json is what the server compares against.
    for _, text, machine, isa in SAMPLES:
        assert cpu.build_mismatch(plan_int8(QuantizeSpec(), text, machine).to_dict(), isa) is None
    vnni_plan = plan_int8(QuantizeSpec(), ICE_LAKE_XEON, "x86_64").to_dict()
    assert cpu.build_mismatch(vnni_plan, "avx2") is not None


def test_on_this_machine_auto_follows_its_flags() -> None:
    plan = plan_int8(QuantizeSpec())
    isa = cpu.detect_isa()
    assert plan.detected and plan.target_cpu == isa
    assert plan.reduce_range is cpu.saturates(isa)
    if cpu.read_cpuinfo() and isa not in ("arm64", "x86-64"):
        flags = cpu.cpu_flags(cpu.read_cpuinfo())
        assert plan.vnni is bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def test_bad_target_is_a_one_line_recipe_error() -> None:
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict({"quantize": {"target_cpu": "avx9"}})
    assert "quantize.target_cpu" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RecipeError, match=r"quantize\.reduce_range"):
        Recipe.from_dict({"quantize": {"reduce_range": "sometimes"}})


def test_import_is_light() -> None:
    heavy = "('torch', 'pulumi', 'onnxruntime')"
    code = f"import sys, optimize.hardware; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"
