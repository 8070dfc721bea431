"""The app.kubernetes.io/* labels every Kubernetes object of ours carries."""

from __future__ import annotations

MANAGED_BY = "pulumi"
PART_OF = "modelstack"


def selector_labels(name: str, instance: str) -> dict[str, str]:
    """The stable subset: safe in selectors, which are immutable on Deployments."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": instance}


def common_labels(name: str, instance: str, component: str, version: str) -> dict[str, str]:
    """All recommended labels; version changes with every model digest, so never select on it."""
    return {
        **selector_labels(name, instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": version[:63],
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
