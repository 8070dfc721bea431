"""ModelService: the hardened, autoscaled, monitored inference service.

Namespace (Pod Security `restricted` enforced), ServiceAccount without an API
token, ConfigMap of server settings, Deployment, Service, and per config an
HPA, a PDB and a NetworkPolicy. Names derive from the stack (the namespace is
`<project>-<stack>`), so short-lived stacks never collide.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from .config import StackConfig
from .labels import common_labels, selector_labels
from .naming import is_dns_label
from .scheduling import Scheduling

PSS_LEVEL = "restricted"
ENV_PREFIX = "MODELSTACK_SERVING_"
RUN_AS = 10001
HEALTH_READY = "/v2/health/ready"
HEALTH_LIVE = "/v2/health/live"
METRICS_PATH = "/metrics"
# SIGTERM handling: the kubelet sleeps PRE_STOP_S (endpoints drop the pod meanwhile), then the server
# answers for SHUTDOWN_DELAY_S more with `Connection: close` on every response (keep-alive clients, whose
# established connections kube-proxy keeps on this pod, reconnect to the others), then drains for at most
# DRAIN_S; all of it must end before the grace period does.
PRE_STOP_S = 5
SHUTDOWN_DELAY_S = 3
DRAIN_S = 25
GRACE_S = 45
DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def _ref_problem(ref: str) -> str | None:
    return None if DIGEST_REF.match(ref) else f"image must be pinned by digest (repo@sha256:<64 hex>), got {ref!r}"


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int = 70
    scale_up_window_s: int = 0
    scale_down_window_s: int = 300


@dataclass(frozen=True)
class ModelServiceArgs:
    namespace: str
    model_name: str
    instance: str
    image: pulumi.Input[str]
    """Pinned by digest (repo@sha256:...); checked here when known, at apply time otherwise."""
    version: str = "unversioned"
    port: int = 8080
    replicas: int = 1
    cpu: str = "1"
    memory: str = "1Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpu: int = 0
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 256
    autoscaling: Autoscaling | None = None
    pdb_min_available: int | None = None
    allowed_ingress_namespaces: tuple[str, ...] = ()
    monitoring_namespace: str | None = None
    scheduling: Scheduling = field(default_factory=Scheduling)

    def __post_init__(self) -> None:
        for key in ("namespace", "model_name", "instance"):
            if not is_dns_label(getattr(self, key)):
                raise ValueError(f"ModelServiceArgs.{key} must be a DNS-1123 label, got {getattr(self, key)!r}")
        if isinstance(self.image, str) and (problem := _ref_problem(self.image)):
            raise ValueError(f"ModelServiceArgs.{problem}")
        if self.gpu and not self.scheduling.node_selector:
            raise ValueError("ModelServiceArgs.gpu > 0 needs GPU scheduling constraints (from GpuNodePool)")
        a = self.autoscaling
        if a and a.min_replicas > a.max_replicas:
            raise ValueError(f"ModelServiceArgs.autoscaling: min {a.min_replicas} > max {a.max_replicas}")
        if self.pdb_min_available is not None and self.pdb_min_available >= self.replica_floor:
            raise ValueError(f"ModelServiceArgs.pdb_min_available {self.pdb_min_available} must be below "
                             f"the replica floor {self.replica_floor}")

    @property
    def replica_floor(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas

    @classmethod
    def from_config(
        cls, cfg: StackConfig, image: pulumi.Input[str], scheduling: Scheduling | None = None,
        version: str = "unversioned",
    ) -> ModelServiceArgs:
        s, m = cfg.serving, cfg.monitoring
        auto = s.autoscaling
        return cls(
            namespace=cfg.namespace, model_name=cfg.model_name, instance=cfg.namespace, image=image, version=version,
            port=s.port, replicas=s.replicas, cpu=s.cpu, memory=s.memory, cpu_limit=s.cpu_limit,
            memory_limit=s.memory_limit, gpu=s.gpu, max_batch_size=s.max_batch_size,
            max_queue_delay_ms=s.max_queue_delay_ms, max_queue_size=s.max_queue_size,
            autoscaling=Autoscaling(auto.min_replicas, auto.max_replicas, auto.target_cpu_utilization,
                                    auto.scale_up_window_s, auto.scale_down_window_s)
            if auto.enabled else None,
            pdb_min_available=s.pdb.min_available if s.pdb.enabled else None,
            allowed_ingress_namespaces=tuple(s.allowed_ingress_namespaces),
            # lightweight monitoring runs Prometheus in the service's own namespace.
            monitoring_namespace=None if m.mode == "none" else (m.namespace or cfg.namespace),
            scheduling=scheduling or Scheduling(),
        )

    def settings(self) -> dict[str, str]:
        """Server settings as the env vars serving/settings.py reads."""
        values: dict[str, Any] = {
            "MODEL_NAME": self.model_name, "PORT": self.port, "DEVICE": "cuda" if self.gpu else "cpu",
            "MAX_BATCH_SIZE": self.max_batch_size, "MAX_QUEUE_DELAY_MS": self.max_queue_delay_ms,
            "MAX_QUEUE_SIZE": self.max_queue_size, "GRACEFUL_TIMEOUT_S": DRAIN_S,
            "SHUTDOWN_DELAY_S": SHUTDOWN_DELAY_S,
        }
        return {ENV_PREFIX + k: str(v) for k, v in values.items()}


class ModelService(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    service_account: pulumi.Output[str]
    service_name: pulumi.Output[str]
    deployment_name: pulumi.Output[str]
    endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelstack:index:ModelService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self._args = args
        labels = common_labels(args.model_name, args.instance, "inference", args.version)
        select = selector_labels(args.model_name, args.instance)

        def meta(namespace: pulumi.Input[str]) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=args.model_name, namespace=namespace, labels=labels)

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
        namespace = ns.metadata.name
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-serviceaccount",
            metadata=meta(namespace),
            # The server never talks to the Kubernetes API: no token in the pod.
            automount_service_account_token=False,
            opts=child,
        )
        settings = args.settings()
        config = k8s.core.v1.ConfigMap(f"{name}-config", metadata=meta(namespace), data=settings, opts=child)
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(namespace),
            spec=self._deployment_spec(args, labels, select, sa.metadata.name, config.metadata.name, settings),
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(namespace),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=select,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=args.port, target_port="http", protocol="TCP")],
            ),
            opts=child,
        )
        if args.autoscaling:
            self._autoscaler(name, args, meta(namespace), deployment, child)
        if args.pdb_min_available is not None:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=meta(namespace),
                spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                    min_available=args.pdb_min_available,
                    selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
                    # A pod that never got ready may be evicted even when the budget is spent.
                    unhealthy_pod_eviction_policy="AlwaysAllow",
                ),
                opts=child,
            )
        self._network_policy(name, args, meta(namespace), select, child)

        self.namespace = namespace
        self.service_account = sa.metadata.name
        self.service_name = service.metadata.name
        self.deployment_name = deployment.metadata.name
        self.endpoint = pulumi.Output.concat(
            "http://", service.metadata.name, ".", namespace, ".svc.cluster.local:", str(args.port))
        self.register_outputs({
            "namespace": self.namespace, "service_account": self.service_account,
            "service_name": self.service_name, "deployment_name": self.deployment_name, "endpoint": self.endpoint,
        })

    @staticmethod
    def _pinned(image: pulumi.Input[str]) -> pulumi.Output[str]:
        def check(ref: str) -> str:
            if ref is not None and (problem := _ref_problem(ref)):
                raise ValueError(f"ModelService: {problem}")
            return ref

        return pulumi.Output.from_input(image).apply(check)

    def _deployment_spec(
        self, args: ModelServiceArgs, labels: dict[str, str], select: dict[str, str],
        service_account: pulumi.Input[str], config_map: pulumi.Input[str], settings: dict[str, str],
    ) -> k8s.apps.v1.DeploymentSpecArgs:
        sched = args.scheduling
        http = lambda path: k8s.core.v1.HTTPGetActionArgs(path=path, port="http")  # noqa: E731
        return k8s.apps.v1.DeploymentSpecArgs(
            # With an HPA the replica count is its business; setting it here would fight it on every update.
            replicas=None if args.autoscaling else args.replicas,
            revision_history_limit=5,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                # Never drop below the serving capacity during a rollout: surge first, then retire.
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1),
            ),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=labels,
                    annotations={
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(args.port),
                        "prometheus.io/path": METRICS_PATH,
                        # envFrom does not restart pods on change; a changed hash in the template does.
                        "modelstack.dev/config-sha256": _digest(settings),
                    },
                ),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=service_account,
                    automount_service_account_token=False,
                    enable_service_links=False,
                    termination_grace_period_seconds=GRACE_S,
                    security_context=k8s.core.v1.PodSecurityContextArgs(
                        run_as_non_root=True, run_as_user=RUN_AS, run_as_group=RUN_AS, fs_group=RUN_AS,
                        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                    ),
                    node_selector=sched.node_selector or None,
                    tolerations=[k8s.core.v1.TolerationArgs(**t) for t in sched.tolerations] or None,
                    runtime_class_name=sched.runtime_class_name,
                    topology_spread_constraints=[k8s.core.v1.TopologySpreadConstraintArgs(
                        max_skew=1,
                        topology_key="kubernetes.io/hostname",
                        # Soft: a hard constraint would block the surge pod of a rollout when every node
                        # already runs one replica.
                        when_unsatisfiable="ScheduleAnyway",
                        label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
                    )],
                    containers=[k8s.core.v1.ContainerArgs(
                        name="server",
                        image=self._pinned(args.image),
                        image_pull_policy="IfNotPresent",  # pinned by digest: the content cannot change
                        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=args.port, protocol="TCP")],
                        env_from=[k8s.core.v1.EnvFromSourceArgs(
                            config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(name=config_map))],
                        resources=_resources(args),
                        startup_probe=k8s.core.v1.ProbeArgs(
                            # Model load + warm-up: up to 5 min on GPU (CUDA init), 2 min on CPU.
                            http_get=http(HEALTH_LIVE), period_seconds=5, failure_threshold=60 if args.gpu else 24,
                        ),
                        liveness_probe=k8s.core.v1.ProbeArgs(
                            http_get=http(HEALTH_LIVE), period_seconds=10, timeout_seconds=2, failure_threshold=3,
                        ),
                        readiness_probe=k8s.core.v1.ProbeArgs(
                            http_get=http(HEALTH_READY), period_seconds=5, timeout_seconds=2, failure_threshold=2,
                        ),
                        lifecycle=k8s.core.v1.LifecycleArgs(
                            # The sleep action needs no shell or binary in the image (Kubernetes >= 1.30).
                            pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                                sleep=k8s.core.v1.SleepActionArgs(seconds=PRE_STOP_S)),
                        ),
                        security_context=k8s.core.v1.SecurityContextArgs(
                            run_as_non_root=True, run_as_user=RUN_AS, run_as_group=RUN_AS,
                            allow_privilege_escalation=False, privileged=False, read_only_root_filesystem=True,
                            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
                    )],
                    volumes=[k8s.core.v1.VolumeArgs(
                        name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="256Mi"))],
                ),
            ),
        )

    def _autoscaler(self, name: str, args: ModelServiceArgs, metadata: k8s.meta.v1.ObjectMetaArgs,
                    deployment: k8s.apps.v1.Deployment, child: pulumi.ResourceOptions) -> None:
        auto = args.autoscaling
        assert auto is not None
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=metadata,
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=deployment.metadata.name),
                min_replicas=auto.min_replicas,
                max_replicas=auto.max_replicas,
                metrics=[k8s.autoscaling.v2.MetricSpecArgs(
                    type="Resource",
                    resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                        name="cpu",
                        target=k8s.autoscaling.v2.MetricTargetArgs(
                            type="Utilization", average_utilization=auto.target_cpu_utilization),
                    ),
                )],
                behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                    scale_up=k8s.autoscaling.v2.HPAScalingRulesArgs(
                        stabilization_window_seconds=auto.scale_up_window_s),
                    scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
                        stabilization_window_seconds=auto.scale_down_window_s),
                ),
            ),
            opts=child,
        )

    def _network_policy(self, name: str, args: ModelServiceArgs, metadata: k8s.meta.v1.ObjectMetaArgs,
                        select: dict[str, str], child: pulumi.ResourceOptions) -> None:
        """Ingress only to the serving port; metrics (same port) from the monitoring namespace."""
        port = [k8s.networking.v1.NetworkPolicyPortArgs(port=args.port, protocol="TCP")]
        callers = sorted({args.namespace, *args.allowed_ingress_namespaces})
        rules = [k8s.networking.v1.NetworkPolicyIngressRuleArgs(ports=port, from_=_from_namespaces(callers))]
        if args.monitoring_namespace:
            rules.append(k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                ports=port, from_=_from_namespaces([args.monitoring_namespace])))
        k8s.networking.v1.NetworkPolicy(
            f"{name}-networkpolicy",
            metadata=metadata,
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
                policy_types=["Ingress"],
                ingress=rules,
            ),
            opts=child,
        )


def _from_namespaces(names: Sequence[str]) -> list[k8s.networking.v1.NetworkPolicyPeerArgs]:
    # kubernetes.io/metadata.name is set on every namespace by the API server (>= 1.22).
    return [k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
        match_labels={"kubernetes.io/metadata.name": n})) for n in names]


def _resources(args: ModelServiceArgs) -> k8s.core.v1.ResourceRequirementsArgs:
    # Without explicit limits, limit = request: Guaranteed QoS, no noisy-neighbour bursts.
    limits = {"cpu": args.cpu_limit or args.cpu, "memory": args.memory_limit or args.memory}
    if args.gpu:
        # Extended resources are limit-only; the request defaults to the limit.
        limits[args.scheduling.gpu_resource] = str(args.gpu)
    return k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": args.cpu, "memory": args.memory}, limits=limits)


def _digest(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
