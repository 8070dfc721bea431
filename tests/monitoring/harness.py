"""Build only the Monitoring component under Pulumi mocks, from a real stack file's validated config.

Independent of __main__.py: the config comes from components.config.parse_stack_config over
Pulumi.<stack>.yaml (plus the operator's secrets), and the recording monitor of tests/pulumi_harness.py
keeps every registration.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pulumi

from components.config import StackConfig, parse_stack_config
from components.monitoring import Monitoring, MonitoringArgs
from tests.pulumi_harness import PROJECT, ROOT, ProgramRun, engine_config, run_mocked, stack_config

PASSWORD = "not-a-real-password-7f3a"


def stack_cfg(stack: str, overrides: dict[str, Any] | None = None) -> StackConfig:
    values = stack_config(stack)
    values.update(overrides or {})
    values[f"{PROJECT}:grafanaAdminPassword"] = PASSWORD
    cfg = parse_stack_config(engine_config(values), project=PROJECT, stack=stack, project_dir=ROOT,
                             check_files=False)
    return replace(cfg, secrets={"grafanaAdminPassword": PASSWORD})


def run_monitoring(stack: str, benchmark_p99_ms: float = 12.5, overrides: dict[str, Any] | None = None,
                   ) -> tuple[ProgramRun, dict[str, Any]]:
    """Register Monitoring('monitoring', ...) for `stack`; returns the run and the component's resolved outputs."""
    cfg = stack_cfg(stack, overrides)
    outputs: dict[str, Any] = {}

    def program() -> None:
        secret = pulumi.Output.secret(PASSWORD)
        full = replace(cfg, secrets={"grafanaAdminPassword": secret})
        mon = Monitoring("monitoring", MonitoringArgs.from_config(full, benchmark_p99_ms=benchmark_p99_ms))
        for key in ("grafana_url", "grafana_port_forward", "prometheus_url", "rules", "latency_threshold_s"):
            getattr(mon, key).apply(lambda v, k=key: outputs.__setitem__(k, v))

    run = run_mocked(stack, program)
    return run, outputs
