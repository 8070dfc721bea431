"""GpuNodePool: GPU nodes for the serving pods, and what places pods on them.

- none: CPU stacks; nothing is created, scheduling is empty.
- eks-managed: an EKS managed node group (GPU AMI) on an existing cluster, with
  its node IAM role.
- karpenter: a Karpenter v1 NodePool + EC2NodeClass limited to GPU families.

GPU nodes carry the `nvidia.com/gpu` NoSchedule taint (only pods that ask for
GPUs land there) and our accelerator label. The NVIDIA device plugin runs on
them, in its own namespace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from .config import StackConfig
from .labels import common_labels, selector_labels
from .scheduling import GPU_NODE_LABEL, GPU_NODE_LABEL_VALUE, GPU_TAINT_KEY, Scheduling, gpu_toleration

NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly")
# v0.17.1 as published on nvcr.io (multi-arch index digest).
DEVICE_PLUGIN_VERSION = "v0.17.1"
DEVICE_PLUGIN_IMAGE = ("nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
                       "@sha256:af31e2b7c7f89834c4e5219860def7ac2e49a207b3d4e8610d5a26772b7738e5")
# Host access (the kubelet's device-plugin socket directory) is what the plugin is for; Pod Security
# `baseline`/`restricted` forbid hostPath, so its namespace is `privileged` and holds nothing else.
DEVICE_PLUGIN_PSS = "privileged"
# checkov checks the plugin cannot pass, each for the same reason: it must be root on the host socket.
DEVICE_PLUGIN_CHECKOV_SKIPS = {
    "CKV_K8S_23": "writes the kubelet's root-owned device-plugin socket directory, so it runs as root",
    "CKV_K8S_40": "runs as root (uid 0) for the same reason",
    "CKV_K8S_8": "upstream plugin serves no health endpoint; the kubelet restarts it when its socket goes",
    "CKV_K8S_9": "upstream plugin serves no health endpoint to probe",
}


@dataclass(frozen=True)
class GpuNodePoolArgs:
    pool: Literal["none", "eks-managed", "karpenter"]
    instance: str
    cluster_name: str | None = None
    instance_types: tuple[str, ...] = ()
    ami_type: str = "AL2023_x86_64_NVIDIA"
    ami_alias: str | None = None
    """karpenter: the pinned EKS AMI release (al2023@vYYYYMMDD)."""
    min_size: int = 0
    desired_size: int = 0
    max_size: int = 1
    subnet_ids: pulumi.Input[Sequence[str]] | None = None
    """eks-managed: subnets of the node group (the cluster's, looked up by the caller)."""
    runtime_class_handler: str | None = None
    """A RuntimeClass for the GPU runtime, only where it is not the node's default (EKS GPU AMIs make it so)."""
    extra_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pool not in ("none", "eks-managed", "karpenter"):
            raise ValueError(f"GpuNodePoolArgs.pool must be none, eks-managed or karpenter, got {self.pool!r}")
        if self.pool != "none" and not (self.cluster_name and self.instance_types):
            raise ValueError("GpuNodePoolArgs: a GPU pool needs cluster_name and instance_types")
        if self.pool == "eks-managed" and not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(f"GpuNodePoolArgs: need min <= desired <= max, got "
                             f"{self.min_size}, {self.desired_size}, {self.max_size}")
        if self.pool == "eks-managed" and self.subnet_ids is None:
            raise ValueError("GpuNodePoolArgs: eks-managed needs subnet_ids")
        if self.pool == "karpenter" and not (self.ami_alias or "").startswith("al2023@v"):
            raise ValueError(f"GpuNodePoolArgs: karpenter needs a pinned ami_alias (al2023@vYYYYMMDD), got "
                             f"{self.ami_alias!r}")

    @classmethod
    def from_config(cls, cfg: StackConfig, subnet_ids: pulumi.Input[Sequence[str]] | None = None) -> GpuNodePoolArgs:
        g = cfg.gpu
        return cls(pool=g.pool, instance=cfg.namespace, cluster_name=cfg.cluster.name,
                   instance_types=tuple(g.instance_types), ami_type=g.ami_type, ami_alias=g.ami_alias,
                   min_size=g.min_size,
                   desired_size=g.desired_size, max_size=g.max_size, subnet_ids=subnet_ids)


class GpuNodePool(pulumi.ComponentResource):
    scheduling: Scheduling
    """Plain data (known at plan time): nodeSelector, tolerations, GPU resource name, runtime class."""
    node_role_arn: pulumi.Output[str | None]

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelstack:index:GpuNodePool", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.scheduling = Scheduling()
        self.node_role_arn = pulumi.Output.from_input(None)
        if args.pool != "none":
            role = self._node_role(name, args, child)
            self.node_role_arn = role.arn
            if args.pool == "eks-managed":
                self._node_group(name, args, role, child)
            else:
                self._karpenter(name, args, role, child)
            runtime_class = self._runtime_class(name, args, child)
            self._device_plugin(name, args, child)
            self.scheduling = Scheduling.gpu(runtime_class)
        self.register_outputs({"node_role_arn": self.node_role_arn,
                               "node_selector": self.scheduling.node_selector,
                               "gpu_resource": self.scheduling.gpu_resource})

    @staticmethod
    def _labels(args: GpuNodePoolArgs) -> dict[str, str]:
        return {GPU_NODE_LABEL: GPU_NODE_LABEL_VALUE, **args.extra_labels}

    def _node_role(self, name: str, args: GpuNodePoolArgs, child: pulumi.ResourceOptions) -> Any:
        import pulumi_aws as aws

        role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{policy.lower().replace('_', '-')}", role=role.name,
                                         policy_arn=f"arn:aws:iam::aws:policy/{policy}", opts=child)
            for policy in NODE_POLICIES
        ]
        self._attachments = attachments
        return role

    def _node_group(self, name: str, args: GpuNodePoolArgs, role: Any, child: pulumi.ResourceOptions) -> None:
        import pulumi_aws as aws

        # Without a launch template EKS leaves IMDS at a hop limit of 2 with IMDSv1 allowed, so any pod could
        # read the node role's credentials; IMDSv2 with one hop keeps them to the host, as Karpenter's does.
        template = aws.ec2.LaunchTemplate(
            f"{name}-launch-template",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
            update_default_version=True,
            opts=child,
        )
        aws.eks.NodeGroup(
            f"{name}-nodegroup",
            cluster_name=args.cluster_name,
            node_role_arn=role.arn,
            subnet_ids=args.subnet_ids,
            ami_type=args.ami_type,
            instance_types=list(args.instance_types),
            capacity_type="ON_DEMAND",
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.min_size, desired_size=args.desired_size, max_size=args.max_size),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id,
                                                                version=template.latest_version.apply(str)),
            labels=self._labels(args),
            taints=[aws.eks.NodeGroupTaintArgs(key=GPU_TAINT_KEY, value="present", effect="NO_SCHEDULE")],
            # The group's nodes cannot join the cluster until their role can.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=self._attachments, ignore_changes=["scalingConfig.desiredSize"])),
        )

    def _karpenter(self, name: str, args: GpuNodePoolArgs, role: Any, child: pulumi.ResourceOptions) -> None:
        families = sorted({t.split(".", 1)[0] for t in args.instance_types})
        discovery = [{"tags": {"karpenter.sh/discovery": args.cluster_name}}]
        class_name = f"{args.instance}-gpu"
        node_class = k8s.apiextensions.CustomResource(
            f"{name}-nodeclass",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=class_name, labels=self._meta_labels(args)),
            spec={
                "role": role.name,
                # AL2023, pinned by release (gpu.amiAlias); Karpenter picks its NVIDIA variant for GPU types.
                "amiSelectorTerms": [{"alias": args.ami_alias}],
                "subnetSelectorTerms": discovery,
                "securityGroupSelectorTerms": discovery,
                "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
            },
            opts=child,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-nodepool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{args.instance}-gpu", labels=self._meta_labels(args)),
            spec={
                "template": {
                    "metadata": {"labels": self._labels(args)},
                    "spec": {
                        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": class_name},
                        "requirements": [
                            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": families},
                            {"key": "node.kubernetes.io/instance-type", "operator": "In",
                             "values": list(args.instance_types)},
                            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        ],
                        "taints": [{"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}],
                    },
                },
                # A cost ceiling: at most max_size GPUs in this pool.
                "limits": {"nvidia.com/gpu": str(args.max_size)},
                "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m"},
            },
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[node_class])),
        )

    @staticmethod
    def _meta_labels(args: GpuNodePoolArgs) -> dict[str, str]:
        return common_labels("gpu-node-pool", args.instance, "gpu", args.pool)

    def _runtime_class(self, name: str, args: GpuNodePoolArgs, child: pulumi.ResourceOptions) -> str | None:
        if not args.runtime_class_handler:
            return None
        rc = f"{args.instance}-nvidia"
        k8s.node.v1.RuntimeClass(
            f"{name}-runtimeclass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=rc, labels=self._meta_labels(args)),
            handler=args.runtime_class_handler,
            scheduling=k8s.node.v1.SchedulingArgs(
                node_selector=self._labels(args), tolerations=[k8s.core.v1.TolerationArgs(**gpu_toleration())]),
            opts=child,
        )
        return rc

    def _device_plugin(self, name: str, args: GpuNodePoolArgs, child: pulumi.ResourceOptions) -> None:
        labels = common_labels("nvidia-device-plugin", args.instance, "gpu", DEVICE_PLUGIN_VERSION)
        select = selector_labels("nvidia-device-plugin", args.instance)
        ns = k8s.core.v1.Namespace(
            f"{name}-device-plugin-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{args.instance}-gpu",
                labels={**labels, "pod-security.kubernetes.io/enforce": DEVICE_PLUGIN_PSS,
                        # still warn, so nothing else moves in unnoticed
                        "pod-security.kubernetes.io/warn": "baseline"},
            ),
            opts=child,
        )
        # The plugin talks to the kubelet over a unix socket only: no ingress at all.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-device-plugin-networkpolicy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="nvidia-device-plugin", namespace=ns.metadata.name,
                                                labels=labels),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select), policy_types=["Ingress"]),
            opts=child,
        )
        host_dir = "/var/lib/kubelet/device-plugins"
        k8s.apps.v1.DaemonSet(
            f"{name}-device-plugin",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="nvidia-device-plugin", namespace=ns.metadata.name, labels=labels,
                # checkov reads its skips from the workload's own metadata, each with its reason.
                annotations={f"checkov.io/skip{i}": f"{check}={why}"
                             for i, (check, why) in enumerate(DEVICE_PLUGIN_CHECKOV_SKIPS.items(), 1)},
            ),
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
                update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        node_selector=self._labels(args),  # GPU nodes only
                        tolerations=[k8s.core.v1.TolerationArgs(**gpu_toleration())],
                        priority_class_name="system-node-critical",
                        automount_service_account_token=False,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
                        containers=[k8s.core.v1.ContainerArgs(
                            name="nvidia-device-plugin",
                            image=DEVICE_PLUGIN_IMAGE,
                            image_pull_policy="IfNotPresent",
                            env=[k8s.core.v1.EnvVarArgs(name="FAIL_ON_INIT_ERROR", value="false")],
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "50m", "memory": "64Mi"}, limits={"cpu": "200m", "memory": "128Mi"}),
                            security_context=k8s.core.v1.SecurityContextArgs(
                                allow_privilege_escalation=False, privileged=False, read_only_root_filesystem=True,
                                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                            ),
                            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="device-plugins", mount_path=host_dir)],
                        )],
                        volumes=[k8s.core.v1.VolumeArgs(
                            name="device-plugins",
                            host_path=k8s.core.v1.HostPathVolumeSourceArgs(path=host_dir, type="Directory"))],
                    ),
                ),
            ),
            opts=child,
        )


def eks_subnet_ids(cluster_name: str, opts: pulumi.InvokeOutputOptions | None = None) -> pulumi.Output[list[str]]:
    """The subnets of an existing EKS cluster, where its node groups go."""
    import pulumi_aws as aws

    cluster = aws.eks.get_cluster_output(name=cluster_name, opts=opts)
    return cluster.vpc_config.apply(lambda vpc: sorted(vpc.subnet_ids) if vpc else [])
