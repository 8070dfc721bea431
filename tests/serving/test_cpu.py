"""CPU int8 ISA detection from /proc/cpuinfo, and the server's start-up line about ISA and threads."""

from __future__ import annotations

import json
import logging
import platform
import re
import warnings
from pathlib import Path

import onnxruntime as ort
import pytest

from serving import cpu, model
from serving.app import create_app
from serving.model import Model
from serving.settings import Settings
from tests.serving import models
from tests.serving.cpuinfo import (
    ALDER_LAKE_DESKTOP,
    GRAVITON3,
    HASWELL_XEON,
    ICE_LAKE_XEON,
    SAMPLES,
    SAPPHIRE_RAPIDS_XEON,
)

with warnings.catch_warnings():  # as in test_app: starlette nudges TestClient users towards httpx2
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

STARTUP = re.compile(
    r"^onnxruntime (?P<version>\S+) on (?P<isa>.+), (?P<cpus>\d+) CPUs \((?P<source>[^)]+)\), "
    r"compute workers (?P<workers>\d+)(?P<workers_set> \(the compute_workers setting\))?, "
    r"intra-op threads (?P<intra>\d+)(?P<intra_set> \(the intra_op_threads setting\))?, inter-op (?P<inter>\d+)$"
)


@pytest.mark.parametrize(("name", "text", "machine", "isa"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_isa_level_of_real_cpuinfo_samples(name: str, text: str, machine: str, isa: str) -> None:
    assert cpu.isa_level(text, machine) == isa
    assert cpu.detect_isa(text, machine) == isa


def test_vnni_and_saturation_by_level() -> None:
    assert [cpu.has_vnni(i) for i in ("amx", "avx512-vnni", "avx-vnni")] == [True] * 3
    assert [cpu.saturates(i) for i in ("amx", "avx512-vnni", "avx-vnni", "arm64")] == [False] * 4
    assert [cpu.saturates(i) for i in ("avx2", "avx512", "x86-64")] == [True] * 3
    assert not cpu.has_vnni("arm64") and not cpu.saturates("ppc64le")
    assert cpu.describe("avx2") == "avx2 (no VNNI)"
    assert cpu.describe("amx") == "amx (VNNI)"
    assert cpu.describe("arm64") == "arm64"


def test_flags_come_from_the_flags_line_not_vmx_flags() -> None:
    flags = cpu.cpu_flags(HASWELL_XEON)
    assert {"avx2", "fma", "sse4_2"} <= flags
    assert "ept_x_only" not in flags  # a 'vmx flags' word
    assert "spectre_v1" not in flags  # a 'bugs' word
    assert {"asimddp", "i8mm"} <= cpu.cpu_flags(GRAVITON3)


def test_first_processor_decides() -> None:
    # Two processors listed: the first one's flags are read, not a union.
    assert cpu.isa_level(ICE_LAKE_XEON + HASWELL_XEON, "x86_64") == "avx512-vnni"
    assert cpu.isa_level(HASWELL_XEON + ICE_LAKE_XEON, "x86_64") == "avx2"


def test_machine_wins_and_fallbacks() -> None:
    assert cpu.isa_level(HASWELL_XEON, "arm64") == "arm64"  # macOS on Apple silicon says arm64
    assert cpu.isa_level("", "AMD64") == "x86-64"  # Windows; no cpuinfo
    assert cpu.isa_level("", "ppc64le") == "ppc64le"
    assert cpu.isa_level("", "") == "unknown"
    assert cpu.read_cpuinfo(Path("/nonexistent/cpuinfo")) == ""


def test_this_machine_matches_its_own_flags() -> None:
    text = cpu.read_cpuinfo()
    if not text:
        pytest.skip("no /proc/cpuinfo here")
    flags, isa = cpu.cpu_flags(text), cpu.detect_isa()
    assert isa == cpu.isa_level(text, platform.machine())
    if platform.machine().lower() in ("aarch64", "arm64"):
        assert isa == "arm64"
        return
    if platform.machine().lower() not in cpu.X86_MACHINES:
        pytest.skip(f"neither x86 nor arm: {platform.machine()}")
    vnni = bool(flags & {"amx_int8", "avx512_vnni", "avx_vnni"})
    assert cpu.has_vnni(isa) == vnni
    assert cpu.saturates(isa) == (not vnni)
    assert (isa == "x86-64") == (not flags & {"avx2", "avx512f", "avx512bw", "avx_vnni", "avx512_vnni", "amx_int8"})
    defining = {"amx": "amx_int8", "avx512-vnni": "avx512_vnni", "avx-vnni": "avx_vnni", "avx2": "avx2"}
    if isa in defining:
        assert defining[isa] in flags
    if isa != "amx":
        assert "amx_int8" not in flags


def test_build_mismatch_warns_only_for_8_bit_weights_on_a_saturating_cpu() -> None:
    vnni_build = {"target_cpu": "avx512-vnni", "detected": False, "vnni": True, "reduce_range": False, "why": "x"}
    warning = cpu.build_mismatch(vnni_build, "avx2")
    assert warning is not None
    assert warning.startswith("model was built for avx512-vnni (VNNI) with 8-bit weights and runs on avx2 (no VNNI)")
    assert "quantize.target_cpu: avx2" in warning
    assert "quantize.target_cpu: avx2" in (cpu.build_mismatch({**vnni_build, "target_cpu": "arm64"}, "x86-64") or "")
    assert cpu.build_mismatch(vnni_build, "amx") is None  # runs on VNNI: fine
    assert cpu.build_mismatch(vnni_build, "arm64") is None
    assert cpu.build_mismatch({**vnni_build, "reduce_range": True}, "avx2") is None  # 7-bit weights: safe
    assert cpu.build_mismatch({**vnni_build, "target_cpu": "avx2"}, "avx512") is None  # stated knowingly
    junks: list[object] = [None, "avx2", [], {"reduce_range": False}, {"target_cpu": 3, "reduce_range": False}]
    for junk in junks:
        assert cpu.build_mismatch(junk, "avx2") is None


def _model_dir(tmp_path: Path, int8: object = None) -> Path:
    out = models.write_model_dir(models.linear_model()[0], tmp_path / "linear", "linear")
    if int8 is not None:
        report = json.loads((out / "report.json").read_text())
        (out / "report.json").write_text(json.dumps({**report, "int8": int8}))
    return out


def _startup_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    return [m for r in caplog.records if r.name == "serving" and (m := STARTUP.match(r.getMessage()))]


def test_server_logs_isa_and_threads_once_at_start_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serving")
    with TestClient(create_app(Settings(model_dir=_model_dir(tmp_path), warmup_runs=1, inter_op_threads=1))) as c:
        assert c.get("/v2/health/ready").status_code == 200
    [line] = _startup_lines(caplog)
    assert line["version"] == ort.__version__
    assert line["isa"] == cpu.describe(cpu.detect_isa())
    assert line["source"] in ("the container CPU limit", "the CPUs this process may use")
    assert int(line["inter"]) == 1 and int(line["intra"]) >= 1
    # By default one single-threaded run per CPU (serving/model.py Threads).
    assert int(line["workers"]) == int(line["cpus"]) and int(line["intra"]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "built for" in r.getMessage()]


def test_threads_from_settings_and_container_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="serving")
    d = _model_dir(tmp_path)
    monkeypatch.setattr(model, "available_cpus", lambda: 2)
    monkeypatch.setattr(model, "cgroup_cpu_limit", lambda: None)
    Model(Settings(model_dir=d, intra_op_threads=3, inter_op_threads=2))
    Model(Settings(model_dir=d, compute_workers=1))
    monkeypatch.setattr(model, "available_cpus", lambda: 4)
    Model(Settings(model_dir=d, compute_workers=3))
    monkeypatch.setattr(model, "cgroup_cpu_limit", lambda: 3.5)
    last = Model(Settings(model_dir=d))
    got = [
        (m["cpus"], m["source"], m["workers"], bool(m["workers_set"]), m["intra"], bool(m["intra_set"]), m["inter"])
        for m in _startup_lines(caplog)
    ]
    assert got == [
        ("2", "the CPUs this process may use", "2", False, "3", True, "2"),
        ("2", "the CPUs this process may use", "1", True, "2", False, "1"),  # one run over every CPU
        ("4", "the CPUs this process may use", "3", True, "1", False, "1"),  # never less than one thread
        ("4", "the container CPU limit", "4", False, "1", False, "1"),
    ]
    assert last.threads.workers == 4 and last.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize(
    ("text", "warns"),
    [(HASWELL_XEON, True), (SAPPHIRE_RAPIDS_XEON, False), (ALDER_LAKE_DESKTOP, False)],
    ids=["avx2", "amx", "avx-vnni"],
)
def test_model_built_for_vnni_warns_on_a_cpu_without(
    text: str, warns: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    isa = cpu.isa_level(text, "x86_64")
    monkeypatch.setattr(model, "detect_isa", lambda: isa)
    int8 = {"target_cpu": "avx512-vnni", "detected": True, "vnni": True, "reduce_range": False, "why": "auto"}
    caplog.set_level(logging.INFO, logger="serving")
    Model(Settings(model_dir=_model_dir(tmp_path, int8)))
    [line] = _startup_lines(caplog)
    assert line["isa"] == cpu.describe(isa)
    warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings_) == warns
    if warns:
        assert warnings_ == [cpu.build_mismatch(int8, "avx2")]
        assert "built for avx512-vnni (VNNI)" in warnings_[0] and "runs on avx2 (no VNNI)" in warnings_[0]
