"""Registered Kubernetes resources -> manifests, and their OpenAPI schema check.

A manifest is what the provider would send: apiVersion/kind from the Pulumi
type token, the rest from the camelCase inputs as registered. Numbers come
back from the engine's protobuf as floats; integral ones are ints in JSON.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import yaml

from tests.pulumi_harness import ProgramRun, Registered

# The Kubernetes version whose OpenAPI schema the manifests must satisfy (EKS and kind both ship it).
KUBERNETES_VERSION = "1.33.0"
CUSTOM_RESOURCE_GROUPS = ("karpenter.sh", "karpenter.k8s.aws", "monitoring.coreos.com", "argoproj.io")


def api_version_and_kind(type_token: str) -> tuple[str, str]:
    """'kubernetes:apps/v1:Deployment' -> ('apps/v1', 'Deployment'); 'core/v1' -> 'v1'."""
    _, group_version, kind = type_token.split(":")
    return group_version.removeprefix("core/"), kind


def is_custom_resource(manifest: dict[str, Any]) -> bool:
    return manifest["apiVersion"].split("/")[0] in CUSTOM_RESOURCE_GROUPS


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_manifest(res: Registered) -> dict[str, Any]:
    manifest = _plain(dict(res.inputs))
    api_version, kind = api_version_and_kind(res.type)
    manifest.setdefault("apiVersion", api_version)
    manifest.setdefault("kind", kind)
    metadata = manifest.setdefault("metadata", {})
    metadata.setdefault("name", f"{res.name}-auto")  # what Pulumi auto-naming would give
    return manifest


def manifests(run: ProgramRun) -> list[dict[str, Any]]:
    """Every Kubernetes object of the run (providers and Helm/YAML wrappers excluded)."""
    return [to_manifest(r) for r in run.resources
            if r.type.startswith("kubernetes:") and r.custom and not r.type.startswith("kubernetes:helm.sh")]


def schema_errors(manifest: dict[str, Any]) -> str | None:
    """Strict OpenAPI validation (unknown fields are errors); None when valid. An Argo Rollout's CRD is not in
    the Kubernetes schema, but its pod template is a core type: it is checked inside a Deployment."""
    if manifest["kind"] == "Rollout":
        spec = manifest["spec"]
        manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": manifest["metadata"],
                    "spec": {"selector": spec["selector"], "template": spec["template"]}}
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{manifest['kind']} {manifest['metadata'].get('name')}: {exc.message} at {list(exc.path)}"
    return None


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def pod_templates(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec(s) a workload object creates, with their pod metadata."""
    kind, spec = manifest["kind"], manifest.get("spec", {})
    if kind == "Pod":
        return [{"metadata": manifest["metadata"], "spec": spec}]
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "Rollout"):
        return [spec["template"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    return []
