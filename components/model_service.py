"""ModelService: the hardened, autoscaled, monitored inference service.

Namespace (Pod Security `restricted` enforced), ServiceAccount without an API
token, ConfigMap of server settings, the pods' workload, Service, and per config an
HPA, a PDB and a NetworkPolicy. Names derive from the stack (the namespace is
`<project>-<stack>`), so short-lived stacks never collide.

The workload is a Deployment (strategy `rolling`), or with a `canary` an Argo
Rollouts `Rollout` whose steps move a share of the replicas to the new revision
while an AnalysisTemplate asks Prometheus about the new pods (components/alerts.py:
the alerts' own thresholds); a RolloutStatus waits for its promotion or rollback.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from .alerts import AlertParams, canary_metrics
from .config import StackConfig
from .labels import common_labels, selector_labels
from .naming import is_dns_label
from .network_policy import DNS_EGRESS, from_namespaces
from .rollout_status import RolloutStatus, RolloutStatusArgs
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
ROLLOUTS_API = "argoproj.io/v1alpha1"


def _ref_problem(ref: str) -> str | None:
    return None if DIGEST_REF.match(ref) else f"image must be pinned by digest (repo@sha256:<64 hex>), got {ref!r}"


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int = 70
    scale_up_window_s: int = 0
    scale_down_window_s: int = 300
    metric: str = "cpu"
    """cpu: an HPA on the pods' CPU utilization; queue: a KEDA ScaledObject on the requests in the servers."""
    target_queue_depth: float = 2.0


@dataclass(frozen=True)
class CanaryStep:
    weight: int
    """Share of the replicas (percent) on the new revision: replica counts, no service mesh."""
    pause_s: int


@dataclass(frozen=True)
class CanaryAnalysis:
    prometheus_url: str
    params: pulumi.Input[AlertParams]
    """The stack's alert figures (availability target, latency threshold): one definition for both."""
    interval_s: int = 15
    failure_limit: int = 0


@dataclass(frozen=True)
class Canary:
    steps: tuple[CanaryStep, ...]
    analysis: CanaryAnalysis | None = None
    timeout_s: int = 900
    kube_context: str | None = None
    """Where RolloutStatus watches the Rollout (kubectl), as the kubernetes provider's context."""

    def __post_init__(self) -> None:
        weights = [s.weight for s in self.steps]
        if not weights or weights != sorted(set(weights)) or not all(0 < w <= 100 for w in weights):
            raise ValueError(f"Canary.steps: weights must rise within 1..100, got {weights}")
        if self.analysis and any(s.pause_s < self.analysis.interval_s for s in self.steps):
            raise ValueError("Canary.steps: every pause must last at least one analysis interval")


@dataclass(frozen=True)
class ModelServiceArgs:
    namespace: str
    model_name: str
    instance: str
    image: pulumi.Input[str]
    """Pinned by digest (repo@sha256:...); checked here when known, at apply time otherwise."""
    version: str = "unversioned"
    port: int = 8080
    grpc_port: int | None = None
    """Also serve the Open Inference Protocol's gRPC service on this port (container and Service)."""
    replicas: int = 1
    cpu: str = "1"
    memory: str = "1Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpu: int = 0
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 256
    compute_workers: int = 0
    """Batches the server runs at once; 0: the server's default (one per CPU, 1 on a GPU)."""
    autoscaling: Autoscaling | None = None
    pdb_min_available: int | None = None
    allowed_ingress_namespaces: tuple[str, ...] = ()
    monitoring_namespace: str | None = None
    scheduling: Scheduling = field(default_factory=Scheduling)
    canary: Canary | None = None
    """None: a Deployment's rolling update; else an Argo Rollout with these steps."""
    project_dir: str = "."
    """Where RolloutStatus's worker (live/) is imported from in the provider's process."""
    fault_error_ratio: float = 0.0
    """Tests only: this share of inference requests gets a 500 (exercises a canary's rollback)."""
    prometheus_url: str | None = None
    """Where KEDA reads the servers' queue (autoscaling metric `queue`)."""

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
        if a and a.metric == "queue" and not self.prometheus_url:
            raise ValueError("ModelServiceArgs.autoscaling: metric 'queue' needs prometheus_url")
        if self.pdb_min_available is not None and self.pdb_min_available >= self.replica_floor:
            raise ValueError(f"ModelServiceArgs.pdb_min_available {self.pdb_min_available} must be below "
                             f"the replica floor {self.replica_floor}")

    @property
    def replica_floor(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas

    @classmethod
    def from_config(
        cls, cfg: StackConfig, image: pulumi.Input[str], scheduling: Scheduling | None = None,
        version: str = "unversioned", analysis: CanaryAnalysis | None = None, prometheus_url: str | None = None,
    ) -> ModelServiceArgs:
        """`analysis`: where and by which figures a canary is judged (the config's `rollout.analysis` says how
        often); None when the stack has no Prometheus."""
        s, m = cfg.serving, cfg.monitoring
        auto, r = s.autoscaling, s.rollout
        canary = None
        if r.strategy == "canary":
            if r.analysis and analysis:
                analysis = replace(analysis, interval_s=r.analysis.interval_s, failure_limit=r.analysis.failure_limit)
            canary = Canary(tuple(CanaryStep(step.weight, step.pause_s) for step in r.steps),
                            analysis if r.analysis else None, r.timeout_s, cfg.cluster.context)
        return cls(
            namespace=cfg.namespace, model_name=cfg.model_name, instance=cfg.namespace, image=image, version=version,
            port=s.port, grpc_port=s.grpc_port, replicas=s.replicas, cpu=s.cpu, memory=s.memory, cpu_limit=s.cpu_limit,
            memory_limit=s.memory_limit, gpu=s.gpu, max_batch_size=s.max_batch_size,
            max_queue_delay_ms=s.max_queue_delay_ms, max_queue_size=s.max_queue_size,
            compute_workers=s.compute_workers,
            autoscaling=Autoscaling(auto.min_replicas, auto.max_replicas, auto.target_cpu_utilization,
                                    auto.scale_up_window_s, auto.scale_down_window_s, auto.metric,
                                    auto.target_queue_depth)
            if auto.enabled else None,
            pdb_min_available=s.pdb.min_available if s.pdb.enabled else None,
            allowed_ingress_namespaces=tuple(s.allowed_ingress_namespaces),
            # lightweight monitoring runs Prometheus in the service's own namespace.
            monitoring_namespace=None if m.mode == "none" else (m.namespace or cfg.namespace),
            scheduling=scheduling or Scheduling(),
            canary=canary, project_dir=str(cfg.project_dir), fault_error_ratio=s.fault_error_ratio,
            prometheus_url=prometheus_url,
        )

    def settings(self) -> dict[str, str]:
        """Server settings as the env vars serving/settings.py reads."""
        values: dict[str, Any] = {
            "MODEL_NAME": self.model_name, "PORT": self.port, "DEVICE": "cuda" if self.gpu else "cpu",
            "MAX_BATCH_SIZE": self.max_batch_size, "MAX_QUEUE_DELAY_MS": self.max_queue_delay_ms,
            "MAX_QUEUE_SIZE": self.max_queue_size, "GRACEFUL_TIMEOUT_S": DRAIN_S,
            "SHUTDOWN_DELAY_S": SHUTDOWN_DELAY_S,
        }
        if self.grpc_port is not None:
            values["GRPC_PORT"] = self.grpc_port
        if self.compute_workers:  # unset keeps the pod template of stacks that leave it alone
            values["COMPUTE_WORKERS"] = self.compute_workers
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
        template = self._pod_template(args, labels, select, sa.metadata.name, config.metadata.name, settings)
        # An HPA's scale updates own spec.replicas; when autoscaling is turned off the count is ours again,
        # which server-side apply refuses as a conflict unless the update is forced.
        workload_meta = k8s.meta.v1.ObjectMetaArgs(name=args.model_name, namespace=namespace, labels=labels,
                                                   annotations={"pulumi.com/patchForce": "true"})
        if args.canary is None:
            k8s.apps.v1.Deployment(
                f"{name}-deployment", metadata=workload_meta, spec=self._deployment_spec(args, select, template),
                opts=child)
            workload_kind = ("apps/v1", "Deployment")
        else:
            # Deleted in the background: a foreground delete marks the Rollout first, and the kubernetes
            # provider (4.25.0) reads that event's status with kstatus, which fails on Argo's string
            # observedGeneration and crashes the provider (a nil result; seen in `make e2e`). In the background
            # the object goes at once, so its await sees it gone; its ReplicaSets and pods follow by GC.
            background = {"pulumi.com/patchForce": "true", "pulumi.com/deletionPropagationPolicy": "background"}
            rollout_meta = k8s.meta.v1.ObjectMetaArgs(name=args.model_name, namespace=namespace, labels=labels,
                                                      annotations=background)
            self._rollout(name, args, rollout_meta, select, template, settings, child)
            workload_kind = (ROLLOUTS_API, "Rollout")
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(namespace),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=select,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=args.port, target_port="http", protocol="TCP")]
                + ([k8s.core.v1.ServicePortArgs(name="grpc", port=args.grpc_port, target_port="grpc", protocol="TCP",
                                                app_protocol="kubernetes.io/h2c")] if args.grpc_port else []),
            ),
            opts=child,
        )
        if args.autoscaling:
            self._autoscaler(name, args, meta(namespace), workload_kind, child)
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
        self.deployment_name = pulumi.Output.from_input(args.model_name)  # the Deployment's or the Rollout's
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

    @staticmethod
    def _deployment_spec(args: ModelServiceArgs, select: dict[str, str],
                         template: k8s.core.v1.PodTemplateSpecArgs) -> k8s.apps.v1.DeploymentSpecArgs:
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
            template=template,
        )

    def _rollout(self, name: str, args: ModelServiceArgs, metadata: k8s.meta.v1.ObjectMetaArgs,
                 select: dict[str, str], template: k8s.core.v1.PodTemplateSpecArgs, settings: dict[str, str],
                 child: pulumi.ResourceOptions) -> pulumi.CustomResource:
        """An Argo Rollout: each step moves `weight`% of the replicas to the new revision, then pauses while
        the AnalysisTemplate judges the new pods; a failed analysis aborts (the canary scales to zero)."""
        canary = args.canary
        assert canary is not None
        steps: list[dict[str, Any]] = []
        templates: dict[int, str] = {}
        for step in canary.steps:
            steps.append({"setWeight": step.weight})
            if canary.analysis:
                # Argo checks a template's measurement count when it validates the Rollout, before any
                # argument is known: one template per number of measurements a pause holds.
                count = max(1, step.pause_s // canary.analysis.interval_s)
                if count not in templates:
                    templates[count] = self._analysis_template(name, args, canary.analysis, count, child)
                steps.append({"analysis": {"templates": [{"templateName": templates[count]}], "args": [
                    {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]}})
            elif step.pause_s:
                steps.append({"pause": {"duration": f"{step.pause_s}s"}})
        spec: dict[str, Any] = {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": select},
            "template": template,
            # New pods that never get ready abort the canary too, rather than leave `pulumi up` waiting.
            "progressDeadlineSeconds": 600,
            "progressDeadlineAbort": True,
            # Surge first, never below the serving capacity (as the Deployment's rolling update).
            "strategy": {"canary": {"maxSurge": 1, "maxUnavailable": 0, "steps": steps}},
        }
        if not args.autoscaling:  # with an HPA the replica count is its business
            spec["replicas"] = args.replicas
        rollout = k8s.apiextensions.CustomResource(
            f"{name}-rollout", api_version=ROLLOUTS_API, kind="Rollout", metadata=metadata, spec=spec, opts=child)
        # What makes a new revision: the image and every setting of the pod (the Rollout's template follows).
        pod_settings = {**settings, "pod": json.dumps([args.cpu, args.memory, args.cpu_limit, args.memory_limit,
                                                        args.gpu, args.fault_error_ratio])}
        revision = pulumi.Output.from_input(args.image).apply(lambda ref: f"{ref} settings={_digest(pod_settings)}")
        RolloutStatus(f"{name}-rollout-status", RolloutStatusArgs(
            namespace=args.namespace, name=args.model_name, revision=revision, timeout_s=canary.timeout_s,
            kube_context=canary.kube_context, project_dir=args.project_dir,
        ), opts=pulumi.ResourceOptions(parent=self, depends_on=[rollout]))
        return rollout

    def _analysis_template(self, name: str, args: ModelServiceArgs, analysis: CanaryAnalysis, count: int,
                           child: pulumi.ResourceOptions) -> str:
        """An AnalysisTemplate taking `count` measurements of the new pods; returns its name."""
        template_name = f"{args.model_name}-{count}-checks"
        # The canary's pods are named after its ReplicaSet: <rollout>-<pod template hash>-<suffix>.
        pods = f"{args.model_name}-{{{{args.canary-hash}}}}-.*"
        metrics = pulumi.Output.from_input(analysis.params).apply(lambda p: canary_metrics(
            p, pods, analysis.prometheus_url, analysis.interval_s, analysis.failure_limit, count))
        labels = common_labels(args.model_name, args.instance, "inference", args.version)
        k8s.apiextensions.CustomResource(
            f"{name}-analysistemplate-{count}", api_version=ROLLOUTS_API, kind="AnalysisTemplate",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=template_name, namespace=args.namespace, labels=labels),
            spec={"args": [{"name": "canary-hash"}], "metrics": metrics}, opts=child)
        return template_name

    def _pod_template(
        self, args: ModelServiceArgs, labels: dict[str, str], select: dict[str, str],
        service_account: pulumi.Input[str], config_map: pulumi.Input[str], settings: dict[str, str],
    ) -> k8s.core.v1.PodTemplateSpecArgs:
        sched = args.scheduling
        http = lambda path: k8s.core.v1.HTTPGetActionArgs(path=path, port="http")  # noqa: E731
        return k8s.core.v1.PodTemplateSpecArgs(
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
                    ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=args.port, protocol="TCP")]
                    + ([k8s.core.v1.ContainerPortArgs(name="grpc", container_port=args.grpc_port, protocol="TCP")]
                       if args.grpc_port else []),
                    env_from=[k8s.core.v1.EnvFromSourceArgs(
                        config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(name=config_map))],
                    # In the template, not the shared ConfigMap: only the new revision's pods misbehave.
                    env=[k8s.core.v1.EnvVarArgs(name=ENV_PREFIX + "FAULT_ERROR_RATIO",
                                                value=str(args.fault_error_ratio))] if args.fault_error_ratio else None,
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
        )


    def _autoscaler(self, name: str, args: ModelServiceArgs, metadata: k8s.meta.v1.ObjectMetaArgs,
                    target: tuple[str, str], child: pulumi.ResourceOptions) -> None:
        auto = args.autoscaling
        assert auto is not None
        if auto.metric == "queue":
            self._queue_scaler(name, args, metadata, target, child)
            return
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=metadata,
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version=target[0], kind=target[1], name=args.model_name),
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

    @staticmethod
    def _queue_scaler(name: str, args: ModelServiceArgs, metadata: k8s.meta.v1.ObjectMetaArgs,
                      target: tuple[str, str], child: pulumi.ResourceOptions) -> None:
        """A KEDA ScaledObject: replicas = requests in the servers / targetQueueDepth, within min..max; KEDA makes
        and owns the HPA that applies it. Requests in the servers, by Little's law: the request-seconds the
        servers spend per second (queue wait included), over a minute. A sampled in-flight gauge would read
        0 for a fast model: its /metrics answer runs on the event loop between inference requests."""
        auto = args.autoscaling
        assert auto is not None and args.prometheus_url
        in_servers = f'sum(rate(modelstack_request_duration_seconds_sum{{namespace="{args.namespace}",' \
                     f'model="{args.model_name}"}}[1m]))'
        k8s.apiextensions.CustomResource(
            f"{name}-scaledobject", api_version="keda.sh/v1alpha1", kind="ScaledObject", metadata=metadata,
            spec={
                "scaleTargetRef": {"apiVersion": target[0], "kind": target[1], "name": args.model_name},
                "minReplicaCount": auto.min_replicas, "maxReplicaCount": auto.max_replicas,
                "pollingInterval": 5,
                # KEDA names the HPA it makes keda-hpa-<ScaledObject>; it applies these windows as ours would.
                "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": auto.scale_up_window_s},
                    "scaleDown": {"stabilizationWindowSeconds": auto.scale_down_window_s},
                }}},
                "triggers": [{"type": "prometheus", "metricType": "AverageValue", "metadata": {
                    "serverAddress": args.prometheus_url, "query": in_servers,
                    "threshold": f"{auto.target_queue_depth:g}"}}],
            },
            opts=child,
        )

    def _network_policy(self, name: str, args: ModelServiceArgs, metadata: k8s.meta.v1.ObjectMetaArgs,
                        select: dict[str, str], child: pulumi.ResourceOptions) -> None:
        """Ingress only to the serving ports (REST, gRPC where enabled); metrics (REST port) from the monitoring
        namespace. Egress only to the cluster DNS: the model is in the image, so a server that reaches out
        anywhere else is not ours."""
        port = [k8s.networking.v1.NetworkPolicyPortArgs(port=p, protocol="TCP")
                for p in (args.port, args.grpc_port) if p is not None]
        callers = sorted({args.namespace, *args.allowed_ingress_namespaces})
        rules = [k8s.networking.v1.NetworkPolicyIngressRuleArgs(ports=port, from_=from_namespaces(callers))]
        if args.monitoring_namespace:
            rules.append(k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                ports=port, from_=from_namespaces([args.monitoring_namespace])))
        k8s.networking.v1.NetworkPolicy(
            f"{name}-networkpolicy",
            metadata=metadata,
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
                policy_types=["Ingress", "Egress"],
                ingress=rules,
                egress=[DNS_EGRESS],
            ),
            opts=child,
        )


def _resources(args: ModelServiceArgs) -> k8s.core.v1.ResourceRequirementsArgs:
    # Without explicit limits, limit = request: Guaranteed QoS, no noisy-neighbour bursts.
    limits = {"cpu": args.cpu_limit or args.cpu, "memory": args.memory_limit or args.memory}
    if args.gpu:
        # Extended resources are limit-only; the request defaults to the limit.
        limits[args.scheduling.gpu_resource] = str(args.gpu)
    return k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": args.cpu, "memory": args.memory}, limits=limits)


def _digest(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
