"""Kubernetes objects as Pulumi passes them: which are workloads, their pod templates and containers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .props import get, is_unknown

PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "modelstack"  # what components/labels.py puts on every object of ours
COMPONENT_LABEL = "app.kubernetes.io/component"
NAME_LABEL = "app.kubernetes.io/name"
# Where each workload kind keeps the pod template it creates.
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Rollout": ("spec", "template"),  # Argo Rollouts (argoproj.io/v1alpha1): a Deployment with canary steps
}


def kind(type_token: str) -> str | None:
    """'kubernetes:apps/v1:Deployment' -> 'Deployment'; None for anything not Kubernetes."""
    parts = type_token.split(":")
    return parts[2] if len(parts) == 3 and parts[0] == "kubernetes" else None


def pod_templates(type_token: str, props: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field path prefix, pod template) for each pod the object creates; a Pod is its own template."""
    k = kind(type_token)
    if k == "Pod":
        return [("", {"metadata": get(props, "metadata") or {}, "spec": get(props, "spec")})]
    if k not in TEMPLATE_PATHS:
        return []
    path = TEMPLATE_PATHS[k]
    template = get(props, *path)
    return [(".".join(path) + ".", template)] if isinstance(template, dict) else []


def label(obj: Any, key: str) -> Any:
    return get(obj, "metadata", "labels", key)


def is_ours(props: dict[str, Any], template: dict[str, Any] | None = None) -> bool:
    """Labelled part-of modelstack (on the object or its pods); third-party charts' objects are not."""
    return any(label(o, PART_OF_LABEL) == PART_OF for o in (props, template) if o is not None)


def containers(spec: Any, *, ephemeral: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, container) for every known container of a pod spec."""
    lists = ("containers", "initContainers", "ephemeralContainers") if ephemeral else ("containers", "initContainers")
    for field in lists:
        items = get(spec, field)
        for i, c in enumerate(items if isinstance(items, list) else []):
            if isinstance(c, dict):  # an unknown container has nothing to check yet
                name = c.get("name")
                yield f"spec.{field}[{i if name is None or is_unknown(name) else name}]", c
