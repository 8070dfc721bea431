"""The rules and the Prometheus config, checked by promtool: syntax, and `promtool test rules` per alert."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from components.alerts import AlertParams, latency_threshold_s, rule_groups, rules_yaml, to_yaml
from components.monitoring_config import prometheus_config
from tests.monitoring import promtool_cases


def run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_checked_in_rule_files_and_tests_are_up_to_date():
    for path, text in promtool_cases.artifacts().items():
        assert path.is_file() and path.read_text() == text, \
            f"{path} is stale: run `python -m tests.monitoring.promtool_cases`"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_promtool_unit_tests_pass(promtool, tmp_path, stack):
    rules = tmp_path / "rules.yaml"
    rules.write_text(to_yaml({"groups": rule_groups(promtool_cases.PARAMS[stack])}))
    (tmp_path / "rules.test.yaml").write_text(to_yaml(promtool_cases.test_file(stack, "rules.yaml")))
    run(promtool, "check", "rules", str(rules))
    out = run(promtool, "test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert "SUCCESS" in out


def test_every_alert_has_a_firing_and_a_quiet_case():
    for stack, p in promtool_cases.PARAMS.items():
        doc = promtool_cases.test_file(stack, "rules.yaml")
        checks = [c for t in doc["tests"] for c in t["alert_rule_test"]]
        alerts = {r["alert"] for g in rule_groups(p) for r in g["rules"] if "alert" in r}
        for name in alerts:
            mine = [c for c in checks if c["alertname"] == name]
            assert any(c["exp_alerts"] for c in mine), f"{stack}: {name} never shown firing"
            assert any(not c["exp_alerts"] for c in mine), f"{stack}: {name} never shown quiet"


def test_burn_rate_windows_follow_the_sre_workbook():
    p = promtool_cases.PARAMS["prod"]
    burns = [r for g in rule_groups(p) for r in g["rules"] if r.get("alert") == "ModelstackErrorBudgetBurn"]
    got = {(r["labels"]["long_window"], r["labels"]["short_window"], r["labels"]["severity"]) for r in burns}
    assert got == {("1h", "5m", "page"), ("6h", "30m", "page"), ("1d", "2h", "ticket"), ("3d", "6h", "ticket")}
    assert "> 0.0144" in burns[0]["expr"] and "> 0.006" in burns[1]["expr"]
    records = {r["record"] for g in rule_groups(p) for r in g["rules"] if "record" in r}
    assert {f"modelstack:request_errors:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")} <= records


def test_latency_threshold_tightens_when_the_model_gets_faster():
    slow, fast = latency_threshold_s(40.0, 2.0, 0.005), latency_threshold_s(10.0, 2.0, 0.005)
    assert slow == pytest.approx(0.085) and fast == pytest.approx(0.025)
    p = AlertParams(namespace="ns", model="m", job="m", availability_target=0.99, latency_threshold_s=fast,
                    restarts="process-start-time")
    assert "> 0.025" in rules_yaml(p)
    with pytest.raises(ValueError):
        AlertParams(namespace="ns", model="m", job="m", availability_target=1.0, latency_threshold_s=0.1,
                    restarts="process-start-time")


def with_file_sd(config: dict, targets: Path) -> dict:
    """The config with each kubernetes_sd_configs swapped for a file_sd_configs that reads `targets`.

    Debian builds Prometheus without Kubernetes service discovery (promtool rejects the key), so the
    discovery block is swapped for file-based discovery; everything else (relabeling, rules) stays as generated.
    """
    jobs = []
    for job in config["scrape_configs"]:
        job = dict(job)
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": [str(targets)], "refresh_interval": "5s"}]
        jobs.append(job)
    return {**config, "scrape_configs": jobs}


@pytest.mark.parametrize("gpu", [False, True])
def test_promtool_checks_the_generated_prometheus_config(promtool, tmp_path, gpu):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_yaml(promtool_cases.PARAMS["prod" if gpu else "dev"]))
    config = prometheus_config("modelstack-dev", "digits", rules_path=str(rules),
                               dcgm_namespace="modelstack-dev-gpu-metrics" if gpu else None)
    path = tmp_path / "prometheus.yml"
    path.write_text(to_yaml(with_file_sd(config, tmp_path / "targets.json")))
    out = run(promtool, "check", "config", str(path))
    assert "SUCCESS" in out
    job = config["scrape_configs"][0]
    assert job["job_name"] == "digits" and job["metrics_path"] == "/metrics"
    sd = job["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod" and sd["namespaces"] == {"names": ["modelstack-dev"]}
    keeps = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == "digits"
    assert keeps[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    assert any(r["source_labels"][-1] == "__meta_kubernetes_pod_annotation_prometheus_io_port"
               for r in job["relabel_configs"])
    assert yaml.safe_load(to_yaml(config)) == config
