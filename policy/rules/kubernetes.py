"""Rules over Kubernetes objects. Each takes (type token, props) and returns one line per violation."""

from __future__ import annotations

import re
from typing import Any

from . import pss
from .props import UNKNOWN, each, get, is_unknown, number
from .workloads import COMPONENT_LABEL, NAME_LABEL, containers, is_ours, kind, label, pod_templates

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Host agents of ours that need what `restricted` forbids, each alone in a namespace that enforces
# `privileged` (components/gpu_node_pool.py and components/monitoring.py say why). Only the controls
# listed are waived for them; every other restricted control still applies.
HOST_AGENTS: dict[str, frozenset[str]] = {
    "nvidia-device-plugin": frozenset({"hostPathVolumes", "runAsNonRoot"}),
    "dcgm-exporter": frozenset({"hostPathVolumes", "runAsNonRoot", "runAsUser", "capabilities"}),
}
SECRET_NAME = re.compile(r"password|passwd|secret|token|api[_-]?key|credential|private[_-]?key", re.IGNORECASE)
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
AWS_ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![A-Z0-9])")
SERVING_COMPONENT = "inference"  # the app.kubernetes.io/component ModelService gives its objects
# ... and Monitoring gives Prometheus and Grafana, and the DCGM exporter
MONITORING_COMPONENTS = ("monitoring", "gpu-metrics")
REQUIRED_RESOURCES = (
    ("requests", "cpu", "set a CPU request: the scheduler reserves capacity by requests"),
    ("requests", "memory", "set a memory request: the scheduler reserves capacity by requests"),
    ("limits", "memory", "set a memory limit: a leak is then OOM-killed in this pod, not starving the node"),
)


def pod_security_restricted(type_token: str, props: dict[str, Any]) -> list[str]:
    out = []
    for prefix, template in pod_templates(type_token, props):
        if not is_ours(props, template):
            continue
        waived = HOST_AGENTS.get(label(props, NAME_LABEL), frozenset())
        out += [prefix + f.message for f in pss.restricted_findings(template) if f.control not in waived]
    return out


def image_pinned_by_digest(type_token: str, props: dict[str, Any]) -> list[str]:
    out = []
    for prefix, template in pod_templates(type_token, props):
        for where, c in containers(get(template, "spec")):
            image = get(c, "image")
            if isinstance(image, str) and not is_unknown(image) and not DIGEST.search(image):
                out.append(f"{prefix}{where}.image {image!r} is not pinned by digest: use repo@sha256:<64 hex> "
                           "(a tag can be moved to other content)")
    return out


def requests_and_limits(type_token: str, props: dict[str, Any]) -> list[str]:
    out = []
    for prefix, template in pod_templates(type_token, props):
        if not is_ours(props, template):
            continue
        for where, c in containers(get(template, "spec"), ephemeral=False):
            resources = get(c, "resources")
            for section, key, fix in REQUIRED_RESOURCES:
                value = get(resources, section, key)
                if value is None or value == "":
                    out.append(f"{prefix}{where}.resources.{section}.{key} is missing: {fix}")
    return out


def _secret_content(value: Any) -> str | None:
    if not isinstance(value, str) or is_unknown(value):
        return None
    if PRIVATE_KEY.search(value):
        return "a PEM private key"
    if AWS_ACCESS_KEY_ID.search(value):
        return "an AWS access key id"
    return None


def _names_a_file(name: str, value: Any) -> bool:
    # `*_FILE` variables (Grafana's GF_*__FILE) hold the path a Secret is mounted at, not the secret.
    return name.upper().endswith("_FILE") and isinstance(value, str) and value.startswith("/")


def no_secrets_in_plain_config(type_token: str, props: dict[str, Any]) -> list[str]:
    out = []
    if kind(type_token) == "ConfigMap":
        fix = "ConfigMaps are stored and shown in plain text; put it in a Secret and reference that"
        for section in ("data", "binaryData"):
            entries = get(props, section)
            for key, value in (entries if isinstance(entries, dict) else {}).items():
                if SECRET_NAME.search(key):
                    out.append(f"{section}[{key}] has a secret-looking key: {fix}")
                elif section == "data" and (what := _secret_content(value)):
                    out.append(f"{section}[{key}] holds {what}: {fix}")
    for prefix, template in pod_templates(type_token, props):
        for where, c in containers(get(template, "spec")):
            for var in each(get(c, "env")):
                name, value = get(var, "name"), get(var, "value")
                if not isinstance(name, str) or value is None or value is UNKNOWN or value == "":
                    continue  # valueFrom, empty, or not known yet
                fix = "use valueFrom.secretKeyRef"
                if (what := _secret_content(value)) is not None:
                    out.append(f"{prefix}{where}.env[{name}].value holds {what}: {fix}")
                elif SECRET_NAME.search(name) and not _names_a_file(name, value):
                    out.append(f"{prefix}{where}.env[{name}] is a secret-looking variable with a plain value: {fix}")
    return out


def hpa_min_not_above_max(type_token: str, props: dict[str, Any]) -> list[str]:
    if kind(type_token) != "HorizontalPodAutoscaler":
        return []
    low, high = get(props, "spec", "minReplicas"), get(props, "spec", "maxReplicas")
    minimum = 1.0 if low is None else number(low)  # Kubernetes' default
    maximum = number(high)
    if minimum is None or maximum is None or minimum <= maximum:
        return []
    return [f"spec.minReplicas {minimum:g} is above spec.maxReplicas {maximum:g}: the autoscaler cannot honour both; "
            "lower minReplicas or raise maxReplicas (modelstack:serving.autoscaling)"]


def serving_replicas_for_availability(type_token: str, props: dict[str, Any]) -> list[str]:
    if not is_ours(props) or label(props, COMPONENT_LABEL) != SERVING_COMPONENT:
        return []
    why = "with one replica there is no capacity during a rollout's node drain or a pod restart"
    k = kind(type_token)
    if k in ("Deployment", "Rollout"):
        # Unset: an HPA owns the count (ModelService leaves it to one); the HPA's floor is judged below.
        replicas = number(get(props, "spec", "replicas"))
        if replicas is not None and replicas < 2:
            return [f"spec.replicas is {replicas:g}: {why}; set modelstack:serving.replicas >= 2"]
    if k == "HorizontalPodAutoscaler":
        low = get(props, "spec", "minReplicas")
        floor = 1.0 if low is None else number(low)
        if floor is not None and floor < 2:
            return [f"spec.minReplicas is {floor:g}: {why}; set modelstack:serving.autoscaling.minReplicas >= 2"]
    return []


def serving_egress_restricted(type_token: str, props: dict[str, Any]) -> list[str]:
    """The serving pods' NetworkPolicy restricts what they reach, not only who reaches them: a model server
    needs the cluster DNS at most, so one that can open connections anywhere is one exfiltration away."""
    return _egress_listed(type_token, props, (SERVING_COMPONENT,), "the cluster DNS")


def monitoring_egress_restricted(type_token: str, props: dict[str, Any]) -> list[str]:
    """Prometheus, Grafana and the DCGM exporter reach what their work needs only: the cluster DNS, their
    scrape targets, the API server (Prometheus), Prometheus (Grafana), nothing (the exporter)."""
    return _egress_listed(type_token, props, MONITORING_COMPONENTS, "DNS, its targets, the API server")


def _egress_listed(type_token: str, props: dict[str, Any], components: tuple[str, ...], needs: str) -> list[str]:
    if kind(type_token) != "NetworkPolicy" or not is_ours(props) or label(props, COMPONENT_LABEL) not in components:
        return []
    types = get(props, "spec", "policyTypes")
    if is_unknown(types) or (isinstance(types, list) and "Egress" in types):
        return []
    return [f"spec.policyTypes is {types or 'unset (Ingress)'}: add Egress with the rules the pods need ({needs}), "
            "so they reach nothing else"]
