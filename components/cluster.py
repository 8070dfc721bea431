"""The Kubernetes provider for the stack's cluster.

Providers are created here, once, by the program and passed to components
(components never create providers: Pulumi's component guidelines).
"""

from __future__ import annotations

import pulumi_kubernetes as k8s

from .config import StackConfig


def kubernetes_provider(cfg: StackConfig) -> k8s.Provider:
    """An explicit provider pinned to the configured kubeconfig context.

    Pinning the context (instead of using whatever `kubectl` points at) keeps a
    `pulumi up` for prod from ever landing in a developer's kind cluster.
    """
    return k8s.Provider(
        "k8s",
        context=cfg.cluster.context,
        enable_server_side_apply=True,
    )
