"""ModelService: the namespace and identity the inference service runs under.

The Deployment, Service, HPA, PDB and NetworkPolicy join this component in
the Kubernetes issue; what is here is already what production needs: a
namespace that enforces the Pod Security `restricted` profile and a service
account that does not mount an API token.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from .config import StackConfig
from .labels import common_labels
from .naming import is_dns_label

PSS_LEVEL = "restricted"


@dataclass(frozen=True)
class ModelServiceArgs:
    namespace: str
    model_name: str
    instance: str
    version: str = "unversioned"

    def __post_init__(self) -> None:
        for key in ("namespace", "model_name", "instance"):
            if not is_dns_label(getattr(self, key)):
                raise ValueError(f"ModelServiceArgs.{key} must be a DNS-1123 label, got {getattr(self, key)!r}")

    @classmethod
    def from_config(cls, cfg: StackConfig) -> ModelServiceArgs:
        return cls(namespace=cfg.namespace, model_name=cfg.model_name, instance=cfg.namespace)


class ModelService(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    service_account: pulumi.Output[str]

    def __init__(self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelstack:index:ModelService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = common_labels(args.model_name, args.instance, "inference", args.version)

        ns = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.namespace,
                labels={
                    **labels,
                    # Pod Security admission: reject, audit and warn on anything below `restricted`.
                    "pod-security.kubernetes.io/enforce": PSS_LEVEL,
                    "pod-security.kubernetes.io/audit": PSS_LEVEL,
                    "pod-security.kubernetes.io/warn": PSS_LEVEL,
                },
            ),
            opts=child,
        )
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-serviceaccount",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.model_name, namespace=ns.metadata.name, labels=labels),
            # The server never talks to the Kubernetes API: no token in the pod.
            automount_service_account_token=False,
            opts=child,
        )
        self.namespace = ns.metadata.name
        self.service_account = sa.metadata.name
        self.register_outputs({"namespace": self.namespace, "service_account": self.service_account})
