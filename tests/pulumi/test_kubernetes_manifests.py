"""Every Kubernetes object the program registers, on every stack file, as a manifest:
valid against the Kubernetes OpenAPI schema, Pod Security `restricted` for our pods,
and clean under checkov's Kubernetes checks (run offline, once per stack)."""

from __future__ import annotations

import copy

import pytest

from components.gpu_node_pool import DEVICE_PLUGIN_CHECKOV_SKIPS
from components.monitoring import DCGM_CHECKOV_SKIPS
from tests.policy import checkov, pss
from tests.policy.manifests import is_custom_resource, manifests, pod_templates, schema_errors, to_yaml
from tests.pulumi_harness import run_program

STACKS = ("dev", "prod", "local")
SECRETS = {"grafanaAdminPassword": "not-a-real-password-7f3a"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {stack: manifests(run_program(stack, secrets=SECRETS)) for stack in STACKS}


def _namespaces(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_matches_the_kubernetes_schema(rendered, stack):
    docs = rendered[stack]
    kinds = {d["kind"] for d in docs}
    assert {"Service", "ConfigMap", "ServiceAccount", "NetworkPolicy"} <= kinds and kinds & {"Deployment", "Rollout"}
    # CustomResources (Karpenter's NodePool/EC2NodeClass) have no schema in the Kubernetes
    # OpenAPI document; their CRDs come with Karpenter, so the schema check skips them. A Rollout's
    # pod template is checked as a Deployment's (its CRD's own schema: the API server in make e2e).
    errors = [e for d in docs if (not is_custom_resource(d) or d["kind"] == "Rollout") and (e := schema_errors(d))]
    assert not errors, "\n".join(errors)


def test_schema_check_is_strict_about_unknown_fields(rendered):
    deployment = copy.deepcopy(next(d for d in rendered["dev"] if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert "livenesProbe" in (schema_errors(deployment) or "")
    deployment = copy.deepcopy(next(d for d in rendered["dev"] if d["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = "three"
    assert schema_errors(deployment)


@pytest.mark.parametrize("stack", STACKS)
def test_pods_pass_pod_security_restricted(rendered, stack):
    docs = rendered[stack]
    namespaces = _namespaces(docs)
    workloads = [d for d in docs if pod_templates(d)]
    assert any(d["kind"] in ("Deployment", "Rollout") for d in workloads)
    for workload in workloads:
        ns = namespaces[workload["metadata"]["namespace"]]
        level = ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        violations = [v for t in pod_templates(workload) for v in pss.restricted_violations(t)]
        if workload["metadata"]["name"] in ("nvidia-device-plugin", "dcgm-exporter"):
            # The device plugin must reach the kubelet's socket directory on the host (hostPath, root),
            # so it has a namespace of its own at `privileged`; nothing else may live there.
            assert level == "privileged"
            # dcgm-exporter also needs uid 0 and SYS_ADMIN (components/monitoring.py says why).
            allowed = ("hostPath", "root", "device-plugins", "pod-resources", "runAsUser is 0", "capabilities")
            assert all(any(a in v for a in allowed) for v in violations), violations
            others = [d for d in workloads if d["metadata"].get("namespace") == ns["metadata"]["name"]]
            assert others == [workload]
            continue
        assert level == "restricted", f"{workload['kind']} {workload['metadata']['name']} in a {level} namespace"
        assert not violations, f"{workload['kind']} {workload['metadata']['name']}: {violations}"


def test_restricted_check_catches_what_admission_would_reject():
    pod = {"metadata": {}, "spec": {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                                    "containers": [{"name": "c", "securityContext": {
                                        "privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}]}}
    found = " | ".join(pss.restricted_violations(pod))
    for expected in ("hostNetwork", "hostPath", "privileged", "SYS_ADMIN", "allowPrivilegeEscalation",
                     "may run as root", "seccomp", "drop ALL"):
        assert expected in found


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_kubernetes_checks_pass(rendered, stack, tmp_path):
    binary = checkov.checkov_binary()
    assert binary is not None, "checkov is not installed: `make test` installs it into .venv-checkov"
    manifest_file = tmp_path / f"{stack}.yaml"
    manifest_file.write_text(to_yaml(rendered[stack]))
    results = checkov.run_checkov(binary, manifest_file)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results.get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    # The required checks really ran on the serving Deployment (a check that never ran passes nothing).
    passed_on_deployment = {c["check_id"] for c in results["passed_checks"] if c["resource"].startswith("Deployment.")}
    assert set(checkov.REQUIRED) <= passed_on_deployment, set(checkov.REQUIRED) - passed_on_deployment
    # Only the device plugin skips checks, each with the reason in its annotations.
    for skipped in results.get("skipped_checks", []):
        assert skipped["resource"].startswith("DaemonSet."), skipped
        allowed = DEVICE_PLUGIN_CHECKOV_SKIPS if "nvidia-device-plugin" in skipped["resource"] else DCGM_CHECKOV_SKIPS
        assert "nvidia-device-plugin" in skipped["resource"] or "dcgm-exporter" in skipped["resource"]
        assert skipped["check_id"] in allowed
