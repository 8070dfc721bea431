"""Monitoring: Prometheus scraping of the serving pods, SLO alert rules, Grafana with the serving dashboard.

- lightweight (dev): Prometheus and Grafana Deployments in the serving namespace (Pod Security `restricted`,
  so they are hardened like the serving pods), configured from ConfigMaps; Prometheus lists pods through a
  namespaced Role.
- kube-prometheus-stack (prod): the community chart as a Helm Release, plus a ServiceMonitor, a
  PrometheusRule and the dashboard as a sidecar ConfigMap.
- GPU stacks: the DCGM exporter on the GPU nodes, GPU alerts and panels.

Rules come from components/alerts.py, the dashboard from components/dashboard.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from . import dashboard
from .alerts import DCGM_JOB, AlertParams, latency_threshold_s, rule_groups, rules_yaml, to_yaml
from .config import StackConfig
from .labels import common_labels, selector_labels
from .monitoring_config import (
    CONFIG_DIR,
    DASHBOARD_FILE,
    DASHBOARDS_DIR,
    DCGM_EXPORTER_IMAGE,
    DCGM_PORT,
    GRAFANA_IMAGE,
    GRAFANA_PORT,
    GRAFANA_SECRET_PASSWORD_KEY,
    GRAFANA_SECRET_USER_KEY,
    KPS_RELEASE,
    PROMETHEUS_IMAGE,
    PROMETHEUS_PORT,
    RULES_FILE,
    grafana_dashboard_provider,
    grafana_datasources,
    kube_prometheus_stack_values,
    prometheus_config,
)
from .naming import dns_label, is_dns_label
from .network_policy import DNS_EGRESS, api_server_egress, from_namespaces
from .scheduling import Scheduling

KPS_REPO = "https://prometheus-community.github.io/helm-charts"
# Server overhead on top of the model's own p99: HTTP + JSON + scheduling (serving/metrics.py targets 2 ms p99).
SERVER_OVERHEAD_S = 0.005
PROMETHEUS_UID = 65534  # nobody, the image's user
# The image's user is 472; any uid works (files are world-readable, writable paths are emptyDirs with
# fsGroup), and a high one cannot collide with host users.
GRAFANA_UID = 10472
ADMIN_DIR = "/etc/grafana-admin"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where Prometheus' in-cluster discovery looks
TOKEN_TTL_S = 3600
# Checks the DCGM exporter cannot pass, each with the reason (checkov reads them from the annotations).
DCGM_CHECKOV_SKIPS = {
    "CKV_K8S_23": "DCGM needs root to open the GPU devices and the host engine (NVIDIA's manifest runs uid 0)",
    "CKV_K8S_40": "runs as root (uid 0) for the same reason",
    "CKV_K8S_25": "SYS_ADMIN is required for DCGM profiling counters",
    "CKV_K8S_39": "SYS_ADMIN is required for DCGM profiling counters",
    "CKV_K8S_22": "the embedded DCGM host engine writes its state and logs next to itself",
    "CKV_K8S_43": "no published digest could be verified offline; pinned by exact tag with pullPolicy Always",
}
Mode = Literal["lightweight", "kube-prometheus-stack"]


@dataclass(frozen=True)
class MonitoringArgs:
    mode: Mode
    namespace: str
    """The serving namespace (created by ModelService: pass it in `depends_on`)."""
    model_name: str
    instance: str
    grafana_admin_password: pulumi.Input[str] | None
    """Required while Grafana runs (`grafana`); unused without it."""
    benchmark_p99_ms: pulumi.Input[float]
    """The OptimizedModel's benchmarked p99 (ms); the latency alert tightens when the model gets faster."""
    availability_target: float = 0.999
    latency_multiplier: float = 2.0
    latency_floor_s: float = SERVER_OVERHEAD_S
    gpu: bool = False
    gpu_scheduling: Scheduling = field(default_factory=lambda: Scheduling.gpu())
    chart_version: str | None = None
    monitoring_namespace: str | None = None
    version: str = "unversioned"
    kube_context: str | None = None
    prometheus_image: str = PROMETHEUS_IMAGE
    """lightweight: the image, pinned by digest (the config loader pins a loopback registry's tag)."""
    grafana: bool = True
    """lightweight: Grafana beside Prometheus (the local cluster has no Grafana image: it leaves it out)."""
    query_namespaces: tuple[str, ...] = ()
    """lightweight: namespaces whose pods may query Prometheus besides Grafana (a canary's analysis)."""
    api_server: tuple[str, ...] = ()
    """lightweight: the API server's endpoints ("IP:port"), Prometheus's only egress besides its targets and
    DNS; empty: the API server's usual ports at any address (components/network_policy.py)."""
    depends_on: Sequence[pulumi.Resource] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("lightweight", "kube-prometheus-stack"):
            raise ValueError(f"MonitoringArgs.mode must be lightweight or kube-prometheus-stack, got {self.mode!r}")
        for key in ("namespace", "model_name", "instance"):
            if not is_dns_label(getattr(self, key)):
                raise ValueError(f"MonitoringArgs.{key} must be a DNS-1123 label, got {getattr(self, key)!r}")
        if not 0.9 <= self.availability_target < 1:
            raise ValueError(f"MonitoringArgs.availability_target must be in [0.9, 1), got {self.availability_target}")
        if self.grafana and self.grafana_admin_password is None:
            raise ValueError("MonitoringArgs.grafana_admin_password is required while Grafana runs")
        if "@sha256:" not in self.prometheus_image:
            raise ValueError(f"MonitoringArgs.prometheus_image must be pinned by digest, got {self.prometheus_image!r}")
        if self.latency_multiplier < 1 or self.latency_floor_s < 0:
            raise ValueError("MonitoringArgs.latency_multiplier must be >= 1 and latency_floor_s >= 0")
        if self.mode == "kube-prometheus-stack":
            if not self.chart_version:
                raise ValueError("MonitoringArgs.chart_version is required for kube-prometheus-stack")
            if not (self.monitoring_namespace and is_dns_label(self.monitoring_namespace)):
                raise ValueError("MonitoringArgs.monitoring_namespace (a DNS label) is required for "
                                 "kube-prometheus-stack")

    @classmethod
    def from_config(
        cls, cfg: StackConfig, benchmark_p99_ms: pulumi.Input[float], depends_on: Sequence[pulumi.Resource] = (),
        gpu_scheduling: Scheduling | None = None, version: str = "unversioned",
    ) -> MonitoringArgs:
        m = cfg.monitoring
        if m.mode == "none":
            raise ValueError("monitoring.mode is 'none': build no Monitoring component")
        return cls(
            mode=m.mode, namespace=cfg.namespace, model_name=cfg.model_name, instance=cfg.namespace,
            grafana_admin_password=cfg.secrets.get("grafanaAdminPassword"), benchmark_p99_ms=benchmark_p99_ms,
            availability_target=m.availability_target, latency_multiplier=m.latency_multiplier,
            # Dynamic batching may hold a request up to max_queue_delay_ms before it runs.
            latency_floor_s=SERVER_OVERHEAD_S + cfg.serving.max_queue_delay_ms / 1000.0,
            gpu=cfg.uses_gpu,
            gpu_scheduling=gpu_scheduling if gpu_scheduling and gpu_scheduling.node_selector else Scheduling.gpu(),
            chart_version=m.chart_version, monitoring_namespace=m.namespace, version=version,
            kube_context=cfg.cluster.context, prometheus_image=m.prometheus_image or PROMETHEUS_IMAGE,
            grafana=m.grafana, depends_on=tuple(depends_on),
            query_namespaces=_query_namespaces(cfg), api_server=tuple(cfg.cluster.api_server),
        )

    @property
    def prometheus_url(self) -> str:
        """Where Prometheus answers inside the cluster (Grafana's data source, a canary's analysis)."""
        if self.mode == "lightweight":
            host = f"prometheus.{self.namespace}.svc.cluster.local"
        else:
            host = f"{KPS_RELEASE}-prometheus.{self.monitoring_namespace}.svc.cluster.local"
        return f"http://{host}:{PROMETHEUS_PORT}"

    def alert_params(self, benchmark_p99_ms: float) -> AlertParams:
        return AlertParams(
            namespace=self.namespace, model=self.model_name, job=self.model_name,
            availability_target=self.availability_target,
            latency_threshold_s=latency_threshold_s(benchmark_p99_ms, self.latency_multiplier, self.latency_floor_s),
            restarts="kube-state-metrics" if self.mode == "kube-prometheus-stack" else "process-start-time",
            gpu=self.gpu,
        )

    @property
    def dcgm_namespace(self) -> str:
        return dns_label(self.namespace, "gpu-metrics")


def _hardened(uid: int) -> k8s.core.v1.SecurityContextArgs:
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True, run_as_user=uid, run_as_group=uid, allow_privilege_escalation=False,
        privileged=False, read_only_root_filesystem=True, capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def _pod_security(uid: int) -> k8s.core.v1.PodSecurityContextArgs:
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True, run_as_user=uid, run_as_group=uid, fs_group=uid,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def _http_probe(path: str, port: str, period: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=port),
                                 period_seconds=period, timeout_seconds=3, failure_threshold=failures)


def _empty_dir(name: str, size: str) -> k8s.core.v1.VolumeArgs:
    return k8s.core.v1.VolumeArgs(name=name, empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=size))


def _token_volume() -> k8s.core.v1.VolumeArgs:
    """An explicit, short-lived API token (instead of automounting one) for pod discovery."""
    return k8s.core.v1.VolumeArgs(name="token", projected=k8s.core.v1.ProjectedVolumeSourceArgs(sources=[
        k8s.core.v1.VolumeProjectionArgs(service_account_token=k8s.core.v1.ServiceAccountTokenProjectionArgs(
            path="token", expiration_seconds=TOKEN_TTL_S)),
        k8s.core.v1.VolumeProjectionArgs(config_map=k8s.core.v1.ConfigMapProjectionArgs(
            name="kube-root-ca.crt", items=[k8s.core.v1.KeyToPathArgs(key="ca.crt", path="ca.crt")])),
        k8s.core.v1.VolumeProjectionArgs(downward_api=k8s.core.v1.DownwardAPIProjectionArgs(items=[
            k8s.core.v1.DownwardAPIVolumeFileArgs(path="namespace", field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                field_path="metadata.namespace"))])),
    ]))


def _admin_secret_data(password: pulumi.Input[str]) -> dict[str, pulumi.Input[str]]:
    """The Grafana admin Secret's data; the password stays a Pulumi secret (encrypted in the state)."""
    encoded = pulumi.Output.secret(password).apply(lambda p: base64.b64encode(p.encode()).decode())
    return {GRAFANA_SECRET_USER_KEY: base64.b64encode(b"admin").decode(), GRAFANA_SECRET_PASSWORD_KEY: encoded}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _query_namespaces(cfg: StackConfig) -> tuple[str, ...]:
    """Where the controllers that ask Prometheus run: a canary's analysis, KEDA's queue scaling."""
    r, auto = cfg.serving.rollout, cfg.serving.autoscaling
    names = [r.analysis.controller_namespace] if r.strategy == "canary" and r.analysis else []
    names += [auto.keda_namespace] if auto.enabled and auto.metric == "queue" else []
    return tuple(sorted(set(names)))


class Monitoring(pulumi.ComponentResource):
    grafana_url: pulumi.Output[str] | None  # None without Grafana
    grafana_port_forward: pulumi.Output[str] | None
    prometheus_url: pulumi.Output[str]
    rules: pulumi.Output[str]
    latency_threshold_s: pulumi.Output[float]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelstack:index:Monitoring", name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        params = pulumi.Output.from_input(args.benchmark_p99_ms).apply(lambda ms: args.alert_params(float(ms)))
        self.latency_threshold_s = params.apply(lambda p: p.latency_threshold_s)
        self.rules = params.apply(rules_yaml)
        if args.gpu:
            self._dcgm_exporter()
        grafana = self._lightweight(params) if args.mode == "lightweight" else self._kube_prometheus_stack(params)
        ctx = f"--context {args.kube_context} " if args.kube_context else ""
        self.prometheus_url = pulumi.Output.from_input(args.prometheus_url)
        self.grafana_url = self.grafana_port_forward = None
        if grafana is not None:
            grafana_svc, grafana_ns, grafana_port = grafana
            self.grafana_url = pulumi.Output.from_input(
                f"http://{grafana_svc}.{grafana_ns}.svc.cluster.local:{grafana_port}")
            self.grafana_port_forward = pulumi.Output.from_input(
                f"kubectl {ctx}-n {grafana_ns} port-forward svc/{grafana_svc} 3000:{grafana_port}"
                " # then open http://localhost:3000")
        self.register_outputs({
            "grafana_url": self.grafana_url, "grafana_port_forward": self.grafana_port_forward,
            "prometheus_url": self.prometheus_url, "latency_threshold_s": self.latency_threshold_s,
        })

    def _labels(self, component: str, name: str | None = None) -> dict[str, str]:
        return common_labels(name or self._args.model_name, self._args.instance, component, self._args.version)

    def _meta(self, name: str, namespace: str, component: str, **extra: Any) -> k8s.meta.v1.ObjectMetaArgs:
        labels = {**self._labels(component, name), **extra.pop("labels", {})}
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, labels=labels, **extra)

    # ---- lightweight -------------------------------------------------------------------------------------

    def _lightweight(self, params: pulumi.Output[AlertParams]) -> tuple[str, str, int] | None:
        """Prometheus (and Grafana unless left out) in the serving namespace; Grafana's service."""
        a, n, ns = self._args, self._name, self._args.namespace
        sa = k8s.core.v1.ServiceAccount(f"{n}-prometheus-serviceaccount",
                                        metadata=self._meta("prometheus", ns, "monitoring"),
                                        automount_service_account_token=False,  # a projected token instead
                                        opts=self._child)
        self._pod_reader(f"{n}-prometheus", ns, sa)
        if a.gpu:
            self._pod_reader(f"{n}-prometheus-dcgm", a.dcgm_namespace, sa, after=self._dcgm_ns)
        config = to_yaml(prometheus_config(ns, a.model_name, dcgm_namespace=a.dcgm_namespace if a.gpu else None))
        data = params.apply(lambda p: {"prometheus.yml": config, RULES_FILE: rules_yaml(p)})
        cm = k8s.core.v1.ConfigMap(f"{n}-prometheus-config", metadata=self._meta("prometheus", ns, "monitoring"),
                                   data=data, opts=self._child)
        checksum = data.apply(lambda d: _sha(json.dumps(d, sort_keys=True)))
        self._deployment(
            f"{n}-prometheus", "prometheus", a.prometheus_image, PROMETHEUS_PORT, PROMETHEUS_UID, checksum,
            args=[f"--config.file={CONFIG_DIR}/prometheus.yml", "--storage.tsdb.path=/prometheus",
                  "--storage.tsdb.retention.time=4d", "--web.listen-address=:9090"],
            probes=("/-/healthy", "/-/ready"), service_account=sa.metadata.name,
            mounts={"config": (CONFIG_DIR, True), "data": ("/prometheus", False), "token": (SA_DIR, True)},
            volumes=[k8s.core.v1.VolumeArgs(name="config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                name=cm.metadata.name)), _empty_dir("data", "4Gi"), _token_volume()],
            resources=({"cpu": "100m", "memory": "256Mi"}, {"cpu": "1", "memory": "1Gi"}),
            ingress_from=selector_labels("grafana", a.instance),  # Grafana queries it
            ingress_namespaces=a.query_namespaces,  # and a canary's analysis
            # It discovers pods through the API server and scrapes them in its namespace (and the DCGM
            # exporter's, on GPU stacks).
            egress=[DNS_EGRESS, *api_server_egress(a.api_server),
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=[k8s.networking.v1.NetworkPolicyPeerArgs(
                        pod_selector=k8s.meta.v1.LabelSelectorArgs())]),
                    *([k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=from_namespaces([a.dcgm_namespace]),
                        ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=DCGM_PORT, protocol="TCP")])]
                      if a.gpu else [])],
        )
        if not a.grafana:  # kubectl port-forward reaches Prometheus all the same (through the kubelet)
            return None

        assert a.grafana_admin_password is not None  # checked in MonitoringArgs
        secret = k8s.core.v1.Secret(
            f"{n}-grafana-admin", metadata=self._meta("grafana-admin", ns, "monitoring"), type="Opaque",
            data=_admin_secret_data(a.grafana_admin_password), opts=self._child,
        )
        provisioning = {"datasources.yaml": grafana_datasources(a.prometheus_url),
                        "dashboards.yaml": grafana_dashboard_provider()}
        prov = k8s.core.v1.ConfigMap(f"{n}-grafana-provisioning",
                                     metadata=self._meta("grafana-provisioning", ns, "monitoring"),
                                     data=provisioning, opts=self._child)
        board = dashboard.render(gpu=a.gpu)
        dash = k8s.core.v1.ConfigMap(f"{n}-grafana-dashboards",
                                     metadata=self._meta("grafana-dashboards", ns, "monitoring"),
                                     data={DASHBOARD_FILE: board}, opts=self._child)
        self._deployment(
            f"{n}-grafana", "grafana", GRAFANA_IMAGE, GRAFANA_PORT, GRAFANA_UID,
            pulumi.Output.from_input(_sha(json.dumps([provisioning, board], sort_keys=True))),
            env=[
                # Grafana reads `__FILE` variants from files: the password stays out of the pod spec and env.
                k8s.core.v1.EnvVarArgs(name="GF_SECURITY_ADMIN_USER__FILE",
                                       value=f"{ADMIN_DIR}/{GRAFANA_SECRET_USER_KEY}"),
                k8s.core.v1.EnvVarArgs(name="GF_SECURITY_ADMIN_PASSWORD__FILE",
                                       value=f"{ADMIN_DIR}/{GRAFANA_SECRET_PASSWORD_KEY}"),
                *[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in {
                    "GF_PATHS_DATA": "/var/lib/grafana", "GF_PATHS_LOGS": "/var/log/grafana",
                    "GF_PATHS_PLUGINS": "/var/lib/grafana/plugins",
                    "GF_PATHS_PROVISIONING": "/etc/grafana/provisioning",
                    "GF_ANALYTICS_REPORTING_ENABLED": "false", "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
                    "GF_USERS_ALLOW_SIGN_UP": "false", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH":
                        f"{DASHBOARDS_DIR}/{DASHBOARD_FILE}",
                }.items()],
            ],
            probes=("/api/health", "/api/health"), service_account=None,
            mounts={"provisioning": ("/etc/grafana/provisioning", True), "dashboards": (DASHBOARDS_DIR, True),
                    "admin": (ADMIN_DIR, True),
                    "data": ("/var/lib/grafana", False), "logs": ("/var/log/grafana", False),
                    "tmp": ("/tmp", False)},
            volumes=[
                k8s.core.v1.VolumeArgs(name="provisioning", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                    name=prov.metadata.name, items=[
                        k8s.core.v1.KeyToPathArgs(key="datasources.yaml", path="datasources/datasources.yaml"),
                        k8s.core.v1.KeyToPathArgs(key="dashboards.yaml", path="dashboards/dashboards.yaml")])),
                k8s.core.v1.VolumeArgs(name="dashboards", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                    name=dash.metadata.name)),
                k8s.core.v1.VolumeArgs(name="admin", secret=k8s.core.v1.SecretVolumeSourceArgs(
                    secret_name=secret.metadata.name, default_mode=0o440)),
                _empty_dir("data", "1Gi"), _empty_dir("logs", "256Mi"), _empty_dir("tmp", "256Mi"),
            ],
            resources=({"cpu": "50m", "memory": "128Mi"}, {"cpu": "500m", "memory": "512Mi"}),
            ingress_from={},  # any pod of the namespace
            # It queries Prometheus, nothing else (no plugin or update downloads).
            egress=[DNS_EGRESS, k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels=selector_labels("prometheus", a.instance)))],
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=PROMETHEUS_PORT, protocol="TCP")])],
        )
        return "grafana", ns, GRAFANA_PORT

    def _pod_reader(self, prefix: str, namespace: str, sa: k8s.core.v1.ServiceAccount,
                    after: pulumi.Resource | None = None) -> None:
        """Least privilege for kubernetes_sd pod discovery: read pods in one namespace, nothing else."""
        meta = self._meta("prometheus-pod-reader", namespace, "monitoring")
        opts = self._child if after is None else pulumi.ResourceOptions.merge(
            self._child, pulumi.ResourceOptions(depends_on=[after]))
        role = k8s.rbac.v1.Role(f"{prefix}-role", metadata=meta, rules=[k8s.rbac.v1.PolicyRuleArgs(
            api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"])], opts=opts)
        k8s.rbac.v1.RoleBinding(
            f"{prefix}-rolebinding", metadata=meta,
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role",
                                             name=role.metadata.name),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=sa.metadata.name,
                                              namespace=self._args.namespace)],
            opts=opts,
        )

    def _deployment(
        self, prefix: str, app: str, image: str, port: int, uid: int, checksum: pulumi.Input[str], *,
        probes: tuple[str, str], service_account: pulumi.Input[str] | None,
        mounts: dict[str, tuple[str, bool]], volumes: list[k8s.core.v1.VolumeArgs],
        resources: tuple[dict[str, str], dict[str, str]], ingress_from: dict[str, str],
        egress: Sequence[k8s.networking.v1.NetworkPolicyEgressRuleArgs], ingress_namespaces: Sequence[str] = (),
        args: list[str] | None = None, env: list[k8s.core.v1.EnvVarArgs] | None = None,
    ) -> None:
        ns = self._args.namespace
        labels = self._labels("monitoring", app)
        select = selector_labels(app, self._args.instance)
        meta = self._meta(app, ns, "monitoring")
        k8s.apps.v1.Deployment(f"{prefix}-deployment", metadata=meta, spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=1,
            # emptyDir storage: two replicas would only duplicate scrapes and alerts.
            strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations={
                    "modelstack.dev/config-sha256": checksum}),  # ConfigMap changes roll the pod
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=service_account,
                    # Only Prometheus talks to the API server, through its projected token volume.
                    automount_service_account_token=False,
                    enable_service_links=False,
                    security_context=_pod_security(uid),
                    containers=[k8s.core.v1.ContainerArgs(
                        name=app, image=image, image_pull_policy="IfNotPresent", args=args, env=env,
                        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=port, protocol="TCP")],
                        resources=k8s.core.v1.ResourceRequirementsArgs(requests=resources[0], limits=resources[1]),
                        startup_probe=_http_probe(probes[1], "http", 5, 60),
                        liveness_probe=_http_probe(probes[0], "http", 15, 4),
                        readiness_probe=_http_probe(probes[1], "http", 10, 3),
                        security_context=_hardened(uid),
                        volume_mounts=[k8s.core.v1.VolumeMountArgs(name=v, mount_path=path, read_only=ro)
                                       for v, (path, ro) in mounts.items()],
                    )],
                    volumes=volumes,
                ),
            ),
        ), opts=self._child)
        k8s.core.v1.Service(f"{prefix}-service", metadata=meta, spec=k8s.core.v1.ServiceSpecArgs(
            type="ClusterIP", selector=select,
            ports=[k8s.core.v1.ServicePortArgs(name="http", port=port, target_port="http", protocol="TCP")],
        ), opts=self._child)
        peers = [k8s.networking.v1.NetworkPolicyPeerArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=ingress_from))]
        peers += [k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": name})) for name in ingress_namespaces]
        self._network_policy(f"{prefix}-networkpolicy", meta, select, port, *peers, egress=egress)

    def _network_policy(self, name: str, meta: k8s.meta.v1.ObjectMetaArgs, select: dict[str, str], port: int,
                        *peers: k8s.networking.v1.NetworkPolicyPeerArgs,
                        egress: Sequence[k8s.networking.v1.NetworkPolicyEgressRuleArgs] = (),
                        opts: pulumi.ResourceOptions | None = None) -> None:
        """Ingress to `port` from `peers` only (kubectl port-forward goes through the kubelet, not the network);
        egress by `egress` only (none: the pods open no connection)."""
        k8s.networking.v1.NetworkPolicy(name, metadata=meta, spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select), policy_types=["Ingress", "Egress"],
            ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=port, protocol="TCP")], from_=list(peers))],
            egress=list(egress),
        ), opts=opts or self._child)

    # ---- kube-prometheus-stack ---------------------------------------------------------------------------

    def _kube_prometheus_stack(self, params: pulumi.Output[AlertParams]) -> tuple[str, str, int]:
        a, n = self._args, self._name
        mns = a.monitoring_namespace
        # checked in MonitoringArgs
        assert mns is not None and a.chart_version is not None and a.grafana_admin_password is not None
        ns = k8s.core.v1.Namespace(f"{n}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=mns,
            # node-exporter (part of the chart) needs hostNetwork/hostPID/hostPath: `privileged` is the
            # only Pod Security level it passes. Nothing else of ours runs here.
            labels={**self._labels("monitoring", "kube-prometheus-stack"),
                    "pod-security.kubernetes.io/enforce": "privileged"},
        ), opts=self._child)
        secret = k8s.core.v1.Secret(
            f"{n}-grafana-admin", metadata=self._meta("grafana-admin", mns, "monitoring"), type="Opaque",
            data=_admin_secret_data(a.grafana_admin_password),
            opts=pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(depends_on=[ns])),
        )
        release = k8s.helm.v3.Release(
            f"{n}-kube-prometheus-stack",
            name=KPS_RELEASE, chart="kube-prometheus-stack", version=a.chart_version, namespace=ns.metadata.name,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=KPS_REPO),
            values=secret.metadata.name.apply(kube_prometheus_stack_values),
            # CRDs come with the chart; Helm runs its hooks (admission webhook certificates).
            skip_crds=False, atomic=True, timeout=900,
            opts=self._child,
        )
        after_chart = pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(depends_on=[release]))
        release_label = {"release": KPS_RELEASE}
        k8s.apiextensions.CustomResource(
            f"{n}-servicemonitor", api_version="monitoring.coreos.com/v1", kind="ServiceMonitor",
            metadata=self._meta(a.model_name, a.namespace, "monitoring", labels=release_label),
            spec={
                "jobLabel": "app.kubernetes.io/name",  # job=<model>, as in the lightweight scrape config
                "selector": {"matchLabels": selector_labels(a.model_name, a.instance)},
                "namespaceSelector": {"matchNames": [a.namespace]},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
            },
            opts=after_chart,
        )
        k8s.apiextensions.CustomResource(
            f"{n}-prometheusrule", api_version="monitoring.coreos.com/v1", kind="PrometheusRule",
            metadata=self._meta(a.model_name, a.namespace, "monitoring", labels=release_label),
            spec=params.apply(lambda p: {"groups": rule_groups(p)}),
            opts=after_chart,
        )
        if a.gpu:
            k8s.apiextensions.CustomResource(
                f"{n}-dcgm-podmonitor", api_version="monitoring.coreos.com/v1", kind="PodMonitor",
                metadata=self._meta(DCGM_JOB, a.dcgm_namespace, "monitoring", labels=release_label),
                spec={
                    "jobLabel": "app.kubernetes.io/name",  # job=dcgm-exporter, which the GPU rules select
                    "selector": {"matchLabels": selector_labels(DCGM_JOB, a.instance)},
                    "namespaceSelector": {"matchNames": [a.dcgm_namespace]},
                    "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
                },
                opts=after_chart,
            )
        k8s.core.v1.ConfigMap(
            f"{n}-grafana-dashboard",
            metadata=self._meta(dns_label(a.namespace, "dashboard"), mns, "monitoring",
                                labels={"grafana_dashboard": "1"}),
            data={DASHBOARD_FILE: dashboard.render(gpu=a.gpu)},
            opts=pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(depends_on=[ns])),
        )
        return f"{KPS_RELEASE}-grafana", mns, 80

    # ---- GPU -----------------------------------------------------------------------------------------------

    def _dcgm_exporter(self) -> None:
        a, n = self._args, self._name
        dns = a.dcgm_namespace
        ns = self._dcgm_ns = k8s.core.v1.Namespace(f"{n}-dcgm-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(
            name=dns,
            # The exporter runs as root with SYS_ADMIN and reads the kubelet's pod-resources socket from the
            # host to map GPUs to pods: no Pod Security level below `privileged` admits that, so it gets a
            # namespace of its own instead of weakening the serving namespace.
            labels={**self._labels("gpu-metrics", DCGM_JOB), "pod-security.kubernetes.io/enforce": "privileged"},
        ), opts=pulumi.ResourceOptions(parent=self))
        sched = a.gpu_scheduling
        select = selector_labels(DCGM_JOB, a.instance)
        k8s.apps.v1.DaemonSet(
            f"{n}-dcgm-exporter",
            metadata=self._meta(DCGM_JOB, dns, "gpu-metrics", annotations={
                f"checkov.io/skip{i}": f"{check}={why}"
                for i, (check, why) in enumerate(DCGM_CHECKOV_SKIPS.items(), 1)}),
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=select),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=self._labels("gpu-metrics", DCGM_JOB), annotations={
                        "prometheus.io/scrape": "true", "prometheus.io/port": str(DCGM_PORT)}),
                    spec=k8s.core.v1.PodSpecArgs(
                        node_selector=sched.node_selector,
                        tolerations=[k8s.core.v1.TolerationArgs(**t) for t in sched.tolerations],
                        runtime_class_name=sched.runtime_class_name,
                        automount_service_account_token=False,
                        priority_class_name="system-node-critical",
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
                        containers=[k8s.core.v1.ContainerArgs(
                            name="exporter", image=DCGM_EXPORTER_IMAGE, image_pull_policy="IfNotPresent",
                            env=[k8s.core.v1.EnvVarArgs(name="DCGM_EXPORTER_KUBERNETES", value="true"),
                                 k8s.core.v1.EnvVarArgs(name="DCGM_EXPORTER_LISTEN", value=f":{DCGM_PORT}")],
                            ports=[k8s.core.v1.ContainerPortArgs(name="metrics", container_port=DCGM_PORT)],
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "100m", "memory": "256Mi"}, limits={"cpu": "500m", "memory": "512Mi"}),
                            liveness_probe=_http_probe("/health", "metrics", 15, 4),
                            readiness_probe=_http_probe("/health", "metrics", 10, 3),
                            security_context=k8s.core.v1.SecurityContextArgs(
                                # Root + SYS_ADMIN: DCGM's profiling counters need it (NVIDIA's own manifest).
                                # The embedded host engine writes logs beside itself: root fs stays writable.
                                run_as_non_root=False, run_as_user=0, allow_privilege_escalation=False,
                                read_only_root_filesystem=False,
                                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"], add=["SYS_ADMIN"]),
                                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
                            volume_mounts=[
                                k8s.core.v1.VolumeMountArgs(name="pod-resources", read_only=True,
                                                            mount_path="/var/lib/kubelet/pod-resources"),
                                k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
                        )],
                        volumes=[
                            k8s.core.v1.VolumeArgs(name="pod-resources", host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                                path="/var/lib/kubelet/pod-resources", type="Directory")),
                            _empty_dir("tmp", "64Mi")],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]),
        )
        scraper_ns = a.namespace if a.mode == "lightweight" else a.monitoring_namespace
        self._network_policy(
            f"{n}-dcgm-networkpolicy", self._meta(DCGM_JOB, dns, "gpu-metrics"), select, DCGM_PORT,
            k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                match_labels={"kubernetes.io/metadata.name": scraper_ns or a.namespace})),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
