"""The Monitoring component under Pulumi mocks, for both stack files (independent of __main__.py)."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from components.alerts import rules_yaml
from components.dashboard import render
from components.monitoring import DCGM_CHECKOV_SKIPS, MonitoringArgs
from components.monitoring_config import DCGM_EXPORTER_IMAGE, GRAFANA_IMAGE, PROMETHEUS_IMAGE
from tests.monitoring.harness import PASSWORD, run_monitoring, stack_cfg
from tests.policy import checkov, pss
from tests.policy.manifests import is_custom_resource, manifests, pod_templates, schema_errors, to_yaml

STACKS = ("dev", "prod")
COMMON = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
          "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")


@pytest.fixture(scope="module")
def runs():
    return {stack: run_monitoring(stack, benchmark_p99_ms=12.5) for stack in STACKS}


def k8s_objects(run):
    return [r for r in run.resources if r.type.startswith("kubernetes:")]


def by_kind(run, kind: str):
    return [r for r in run.resources if r.type.endswith(f":{kind}")]


@pytest.mark.parametrize("stack", STACKS)
def test_component_shape(runs, stack):
    run, _ = runs[stack]
    comp = run.one("modelstack:index:Monitoring")
    assert comp.name == "monitoring"
    for r in k8s_objects(run):
        assert r.parent == comp.urn, f"{r.type} {r.name} is not parented to the component"
        assert r.name.startswith("monitoring-"), r.name
        labels = r.inputs.get("metadata", {}).get("labels", {})
        if r.type != "kubernetes:helm.sh/v3:Release":
            assert set(COMMON) <= set(labels), f"{r.type} {r.name} lacks common labels"


@pytest.mark.parametrize("stack", STACKS)
def test_grafana_password_stays_secret(runs, stack):
    run, _ = runs[stack]
    secret = run.one("kubernetes:core/v1:Secret")
    assert secret.secret_inputs
    assert base64.b64decode(secret.inputs["data"]["admin-password"]).decode() == PASSWORD
    for r in run.resources:
        text = json.dumps(r.inputs, default=str)
        assert PASSWORD not in text, f"password in plain text in {r.type} {r.name}"
        if r is not secret:
            assert base64.b64encode(PASSWORD.encode()).decode() not in text, f"password leaks into {r.name}"


def test_lightweight_dev(runs):
    run, out = runs["dev"]
    kinds = {r.type.split(":")[-1] for r in k8s_objects(run)}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Secret"} <= kinds
    assert not by_kind(run, "DaemonSet") and not by_kind(run, "Release")  # CPU stack, no chart
    ns = stack_cfg("dev").namespace
    role = run.one("kubernetes:rbac.authorization.k8s.io/v1:Role")
    assert role.inputs["metadata"]["namespace"] == ns
    assert role.inputs["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert not by_kind(run, "ClusterRole")  # namespaced, least privilege
    binding = run.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    assert binding.inputs["subjects"][0]["kind"] == "ServiceAccount"

    deployments = {d.inputs["metadata"]["name"]: d for d in by_kind(run, "Deployment")}
    assert set(deployments) == {"prometheus", "grafana"}
    images = {n: d.inputs["spec"]["template"]["spec"]["containers"][0]["image"] for n, d in deployments.items()}
    assert images == {"prometheus": PROMETHEUS_IMAGE, "grafana": GRAFANA_IMAGE}
    assert all("@sha256:" in i for i in images.values())
    for d in deployments.values():
        c = d.inputs["spec"]["template"]["spec"]["containers"][0]
        assert {"startupProbe", "livenessProbe", "readinessProbe", "resources"} <= set(c)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["runAsUser"] > 0

    config = next(c for c in by_kind(run, "ConfigMap") if c.name == "monitoring-prometheus-config")
    prom = yaml.safe_load(config.inputs["data"]["prometheus.yml"])
    assert prom["scrape_configs"][0]["kubernetes_sd_configs"][0]["namespaces"]["names"] == [ns]
    rules = config.inputs["data"]["rules.yaml"]
    params = MonitoringArgs.from_config(stack_cfg("dev"), benchmark_p99_ms=12.5).alert_params(12.5)
    assert rules == rules_yaml(params) == out["rules"]
    assert "process_start_time_seconds" in rules and "DCGM" not in rules
    # 12.5 ms x 3 (dev's latencyMultiplier) + 5 ms server overhead + 2 ms batching delay
    assert out["latency_threshold_s"] == pytest.approx(0.0445)
    dashboards = next(c for c in by_kind(run, "ConfigMap") if c.name == "monitoring-grafana-dashboards")
    assert list(dashboards.inputs["data"].values()) == [render(gpu=False)]
    assert out["grafana_port_forward"].startswith(f"kubectl --context kind-modelstack -n {ns} port-forward svc/grafana")
    assert out["prometheus_url"] == f"http://prometheus.{ns}.svc.cluster.local:9090"


def test_latency_threshold_follows_the_benchmark():
    _, slow = run_monitoring("dev", benchmark_p99_ms=40.0)
    _, fast = run_monitoring("dev", benchmark_p99_ms=10.0)
    assert fast["latency_threshold_s"] < slow["latency_threshold_s"]
    assert "> 0.127" in slow["rules"] and "> 0.037" in fast["rules"]


def test_kube_prometheus_stack_prod(runs):
    run, out = runs["prod"]
    cfg = stack_cfg("prod")
    release = run.one("kubernetes:helm.sh/v3:Release")
    assert release.inputs["chart"] == "kube-prometheus-stack"
    assert release.inputs["version"] == cfg.monitoring.chart_version == "79.1.0"
    assert release.inputs["repositoryOpts"]["repo"] == "https://prometheus-community.github.io/helm-charts"
    assert release.inputs["namespace"] == "monitoring"
    values = release.inputs["values"]
    assert values["grafana"]["admin"]["existingSecret"] == "grafana-admin"
    assert values["grafana"]["image"]["tag"] == "11.6.0"
    assert values["prometheus"]["prometheusSpec"]["ruleSelectorNilUsesHelmValues"] is False

    monitor = run.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    assert monitor.inputs["metadata"]["namespace"] == cfg.namespace
    assert monitor.inputs["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": cfg.model_name, "app.kubernetes.io/instance": cfg.namespace}
    assert monitor.inputs["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert release.urn in monitor.dependencies  # the chart brings the CRDs

    rule = run.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    groups = rule.inputs["spec"]["groups"]
    assert yaml.safe_load(out["rules"]) == {"groups": groups}
    text = json.dumps(groups)
    assert "kube_pod_container_status_restarts_total" in text and "DCGM_FI_DEV_GPU_UTIL" in text

    board = next(c for c in by_kind(run, "ConfigMap") if "dashboard" in c.name)
    assert board.inputs["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board.inputs["metadata"]["namespace"] == "monitoring"
    assert list(board.inputs["data"].values()) == [render(gpu=True)]
    assert out["prometheus_url"] == "http://kps-prometheus.monitoring.svc.cluster.local:9090"


def test_gpu_stack_deploys_the_dcgm_exporter(runs):
    run, _ = runs["prod"]
    ds = run.one("kubernetes:apps/v1:DaemonSet")
    spec = ds.inputs["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == DCGM_EXPORTER_IMAGE
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"modelstack.dev/accelerator": "nvidia"}
    namespaces = {n.inputs["metadata"]["name"]: n for n in by_kind(run, "Namespace")}
    own = namespaces[ds.inputs["metadata"]["namespace"]]
    assert own.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert ds.inputs["metadata"]["namespace"] not in (stack_cfg("prod").namespace, "monitoring")
    assert run.one("kubernetes:monitoring.coreos.com/v1:PodMonitor")


def test_args_are_validated():
    cfg = stack_cfg("dev")
    good = MonitoringArgs.from_config(cfg, benchmark_p99_ms=1.0)
    with pytest.raises(ValueError, match="chart_version"):
        MonitoringArgs(**{**good.__dict__, "mode": "kube-prometheus-stack", "monitoring_namespace": "monitoring"})
    with pytest.raises(ValueError, match="namespace"):
        MonitoringArgs(**{**good.__dict__, "namespace": "Not_A_Label"})
    with pytest.raises(ValueError, match="mode"):
        MonitoringArgs.from_config(stack_cfg("dev", {"modelstack:monitoring": {"mode": "none"}}), 1.0)


@pytest.fixture(scope="module")
def rendered(runs):
    return {stack: manifests(runs[stack][0]) for stack in STACKS}


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_match_the_kubernetes_schema(rendered, stack):
    errors = [e for d in rendered[stack] if not is_custom_resource(d) and (e := schema_errors(d))]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_and_grafana_pass_pod_security_restricted(rendered, stack):
    for workload in rendered[stack]:
        if not pod_templates(workload) or workload["metadata"]["name"] == "dcgm-exporter":
            continue
        violations = [v for t in pod_templates(workload) for v in pss.restricted_violations(t)]
        assert not violations, f"{workload['metadata']['name']}: {violations}"


def test_checkov_passes_with_reasoned_skips_for_the_dcgm_exporter(rendered, tmp_path):
    binary = checkov.checkov_binary()
    assert binary is not None, "checkov is not installed: `make test` installs it into .venv-checkov"
    path = tmp_path / "monitoring.yaml"
    path.write_text(to_yaml(rendered["dev"] + rendered["prod"]))
    results = checkov.run_checkov(binary, path)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results.get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    for skipped in results.get("skipped_checks", []):
        assert "dcgm-exporter" in skipped["resource"], skipped
        assert skipped["check_id"] in DCGM_CHECKOV_SKIPS


def test_lightweight_on_a_gpu_stack_scrapes_the_dcgm_exporter():
    run, out = run_monitoring("prod", overrides={"modelstack:monitoring": {"mode": "lightweight"}})
    cfg = stack_cfg("prod")
    roles = {r.inputs["metadata"]["namespace"] for r in by_kind(run, "Role")}
    assert roles == {cfg.namespace, f"{cfg.namespace}-gpu-metrics"}
    config = next(c for c in by_kind(run, "ConfigMap") if c.name == "monitoring-prometheus-config")
    jobs = {j["job_name"] for j in yaml.safe_load(config.inputs["data"]["prometheus.yml"])["scrape_configs"]}
    assert jobs == {cfg.model_name, "prometheus", "dcgm-exporter"}
    assert "DCGM_FI_DEV_FB_USED" in out["rules"]
    policy = next(p for p in by_kind(run, "NetworkPolicy") if "dcgm" in p.name)
    assert policy.inputs["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": cfg.namespace}


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(runs):
    run, _ = runs["dev"]
    ns = stack_cfg("dev").namespace
    prov = next(c for c in by_kind(run, "ConfigMap") if c.name == "monitoring-grafana-provisioning").inputs["data"]
    (source,) = yaml.safe_load(prov["datasources.yaml"])["datasources"]
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus.{ns}.svc.cluster.local:9090"
    (provider,) = yaml.safe_load(prov["dashboards.yaml"])["providers"]
    grafana = next(d for d in by_kind(run, "Deployment") if d.inputs["metadata"]["name"] == "grafana")
    pod = grafana.inputs["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["dashboards"] == provider["options"]["path"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith(mounts["admin"] + "/")
    assert not any("PASSWORD" in e["name"] and "valueFrom" in e for e in pod["containers"][0]["env"])
