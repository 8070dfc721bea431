"""Typed stack configuration, validated before any resource is registered.

Every `modelstack:*` key of a stack is read here into one `StackConfig`. Each
problem becomes one line of a `ConfigError` naming the stack file, the key,
what was given and what is expected; unknown keys get a "did you mean". The
structured sections are documented in docs/configuration.md.

This module imports no torch: it runs on every `pulumi preview`.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import json
import re
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from optimize.recipe import CpuTarget, Recipe, RecipeError, load_recipe

from . import image_ref
from .naming import dns_label, is_dns_label, stack_namespace
from .release import SourceRelease, read_release

NAMESPACE = "modelstack"

CPU_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
MEMORY_QUANTITY = re.compile(r"^\d+(\.\d+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(ValueError):
    """Stack configuration that cannot work; one problem per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n  - " + "\n  - ".join(problems))


class _Section(BaseModel):
    """Strict, camelCase, unknown keys rejected: typos fail instead of being ignored."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=False
    )


def _check_dns_label(value: str | None) -> str | None:
    if value is not None and not is_dns_label(value):
        raise ValueError("must be a DNS-1123 label: lower case letters, digits and '-', at most 63 characters")
    return value


class ModelSection(_Section):
    """The source model and the data that validates it."""

    source: str = Field(min_length=1)
    format: Literal["auto", "torchscript", "export", "state_dict", "onnx"] = "auto"
    factory: str | None = None
    sha256: str | None = None
    validation_data: str | None = None
    calibration_data: str | None = None
    # Rows to fine-tune a pruned or distilled model on (recipe finetune/distill); no labels needed.
    training_data: str | None = None
    name: str | None = None
    # The CPU of the nodes that serve it, when the build machine is not one of them: int8 is built for it.
    target_cpu: CpuTarget | None = None

    _name = field_validator("name")(_check_dns_label)

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not SHA256.match(value):
            raise ValueError("must be 64 lower-case hex characters (sha256sum output)")
        return value

    @field_validator("factory")
    @classmethod
    def _module_colon_function(cls, value: str | None) -> str | None:
        if value is not None and not FACTORY.match(value):
            raise ValueError("must look like 'package.module:function'")
        return value

    @property
    def resolved_format(self) -> str:
        """The declared format, or the one the file name and factory imply."""
        if self.format != "auto":
            return self.format
        suffix = Path(self.source).suffix.lower()
        if suffix == ".onnx":
            return "onnx"
        if suffix == ".pt2":
            return "export"
        return "state_dict" if self.factory else "torchscript"


class ArtifactsSection(_Section):
    """Where optimized artifacts are published: a local directory or s3://bucket/prefix."""

    store: str = ".modelstack/artifacts"
    region: str | None = None
    endpoint: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def is_s3(self) -> bool:
        return self.store.startswith("s3://")


class ClusterSection(_Section):
    """The Kubernetes cluster the stack deploys to."""

    provider: Literal["kind", "eks", "existing"]
    context: str | None = None
    name: str | None = None
    region: str | None = None
    api_server: list[str] = Field(default_factory=list)
    """The API server's endpoints, "IP:port" (`kubectl get endpointslice kubernetes`): the only address the
    in-namespace Prometheus may reach besides its targets and DNS. Empty: its usual ports, any address."""

    @field_validator("api_server")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            host, _, port = endpoint.rpartition(":")
            try:
                ipaddress.IPv4Address(host)
                ok = port.isdigit() and 1 <= int(port) <= 65535
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{endpoint!r} is not IPv4:port (e.g. 10.0.0.1:6443; see `kubectl get "
                                 "endpointslice kubernetes`)")
        return value


class RegistrySection(_Section):
    """Where the serving image is pushed."""

    type: Literal["local", "ecr", "external"]
    manage: bool = True
    port: int = Field(5001, ge=1024, le=65535)
    repository: str | None = None
    keep_last_images: int = Field(30, ge=1, le=1000)
    url: str | None = None
    username: str | None = None


class GpuSection(_Section):
    """The GPU node pool, if any."""

    pool: Literal["none", "eks-managed", "karpenter"] = "none"
    instance_types: list[str] = Field(default_factory=list)
    ami_type: Literal["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA", "AL2_x86_64_GPU"] = "AL2023_x86_64_NVIDIA"
    min_size: int = Field(0, ge=0, le=1000)
    max_size: int = Field(1, ge=1, le=1000)
    desired_size: int = Field(0, ge=0, le=1000)
    # karpenter: the EKS AMI release its nodes run (`al2023@vYYYYMMDD`), pinned so that a newly published AMI
    # does not replace every GPU node (Karpenter treats a changed selector result as drift).
    ami_alias: str | None = Field(None, pattern=r"^al2023@v\d{8}$")


class AutoscalingSection(_Section):
    enabled: bool = False
    min_replicas: int = Field(1, ge=1, le=1000)
    max_replicas: int = Field(1, ge=1, le=1000)
    target_cpu_utilization: int = Field(70, ge=1, le=100)
    # The HPA's stabilization windows: how long a higher (lower) replica count must be asked for before it
    # is applied. Model pods are slow to start, so scale-down waits 5 minutes by default.
    scale_up_window_s: int = Field(0, ge=0, le=3600)
    scale_down_window_s: int = Field(300, ge=0, le=3600)
    # What the replicas follow: `cpu`, the pods' CPU utilization (an HPA reading metrics-server), or `queue`,
    # the inference requests in the servers (waiting for the model or being answered, averaged over a
    # minute), read from the stack's Prometheus by KEDA, whose operator runs in `kedaNamespace`: each
    # replica is given targetQueueDepth of them.
    metric: Literal["cpu", "queue"] = "cpu"
    target_queue_depth: float = Field(2.0, gt=0, le=10_000)
    keda_namespace: str = "keda"

    _keda_namespace = field_validator("keda_namespace")(_check_dns_label)


class PdbSection(_Section):
    enabled: bool = False
    min_available: int = Field(1, ge=1, le=1000)


class CanaryStepSection(_Section):
    """One canary step: this share of the replicas runs the new revision, then it is watched this long."""

    weight: int = Field(ge=1, le=100)
    pause_s: int = Field(60, ge=0, le=3600)


class CanaryAnalysisSection(_Section):
    """During each step's pause, the stack's Prometheus is asked every intervalS about the new pods."""

    interval_s: int = Field(15, ge=5, le=600)
    failure_limit: int = Field(0, ge=0, le=100)
    # Where the Argo Rollouts controller runs: its analysis queries Prometheus, whose NetworkPolicy lets it in.
    controller_namespace: str = "argo-rollouts"

    _namespace = field_validator("controller_namespace")(_check_dns_label)


class RolloutSection(_Section):
    """How a new revision replaces the serving pods: `rolling` (a Deployment) or `canary` (an Argo Rollout)."""

    strategy: Literal["rolling", "canary"] = "rolling"
    steps: list[CanaryStepSection] = Field(default_factory=list)
    analysis: CanaryAnalysisSection | None = None
    # How long `pulumi up` waits for a canary to be promoted or rolled back before it fails the update.
    timeout_s: int = Field(900, ge=60, le=7200)


class ServingSection(_Section):
    """The inference Deployment and what surrounds it."""

    replicas: int = Field(1, ge=1, le=1000)
    namespace: str | None = None
    port: int = Field(8080, ge=1024, le=65535)
    # The Open Inference Protocol's gRPC service on this port as well (unset: REST only).
    grpc_port: int | None = Field(None, ge=1024, le=65535)
    gpu: int = Field(0, ge=0, le=16)
    cpu: str = "1"
    memory: str = "1Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    max_batch_size: int = Field(8, ge=1, le=1024)
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=1000.0)
    max_queue_size: int = Field(256, ge=1, le=100_000)
    # Batches the server runs at once (0: one per CPU of the pod's limit, each single-threaded; 1 on a GPU).
    compute_workers: int = Field(0, ge=0, le=256)
    autoscaling: AutoscalingSection = AutoscalingSection()
    pdb: PdbSection = PdbSection()
    allowed_ingress_namespaces: list[str] = Field(default_factory=list)
    rollout: RolloutSection = RolloutSection()
    # For tests only: this share of inference requests is answered with 500 (a model that misbehaves once
    # served), so a canary's analysis and its rollback can be exercised. Never set it on a real stack.
    fault_error_ratio: float = Field(0.0, ge=0.0, le=1.0)

    _namespace = field_validator("namespace")(_check_dns_label)

    @field_validator("cpu", "cpu_limit")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None and not CPU_QUANTITY.match(value):
            raise ValueError("must be a Kubernetes CPU quantity such as '500m' or '2'")
        return value

    @field_validator("memory", "memory_limit")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not MEMORY_QUANTITY.match(value):
            raise ValueError("must be a Kubernetes memory quantity such as '512Mi' or '4Gi'")
        return value

    @field_validator("allowed_ingress_namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not is_dns_label(v)]
        if bad:
            raise ValueError(f"{bad} are not valid namespace names (DNS-1123 labels)")
        return value

    @model_validator(mode="after")
    def _ports_differ(self) -> ServingSection:
        if self.grpc_port == self.port:
            raise ValueError(f"grpcPort {self.grpc_port} is the REST port too; give gRPC a port of its own")
        return self


class ImageSection(_Section):
    """How the serving image is built: what air-gapped builders need to say."""

    base_image: str | None = Field(None, min_length=1, pattern=r"^\S+$")
    wheelhouse: str | None = Field(None, min_length=1)
    registry_cache: bool = True
    builder: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class PromoteSection(_Section):
    """Take the model and image another stack built and tested, by digest, instead of building them."""

    from_: str = Field(alias="from")

    @field_validator("from_")
    @classmethod
    def _stack_name(cls, value: str) -> str:
        if not STACK_NAME.match(value):
            raise ValueError("must be a fully qualified stack name ORG/PROJECT/STACK, such as "
                             "'organization/modelstack/dev' (`pulumi stack ls --all` lists them)")
        return value


class MonitoringSection(_Section):
    """Metrics, alerts and dashboards."""

    mode: Literal["none", "lightweight", "kube-prometheus-stack"] = "lightweight"
    availability_target: float = Field(0.999, ge=0.9, le=0.99999)
    latency_multiplier: float = Field(2.0, ge=1.0, le=100.0)
    chart_version: str | None = None
    namespace: str | None = None
    # lightweight: the Prometheus image (REPO:TAG@sha256:..., or a tag on a loopback registry, looked up
    # when the config is read) and whether Grafana runs beside it.
    prometheus_image: str | None = Field(None, min_length=1, pattern=r"^\S+$")
    grafana: bool = True

    _namespace = field_validator("namespace")(_check_dns_label)


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelSection,
    "artifacts": ArtifactsSection,
    "cluster": ClusterSection,
    "registry": RegistrySection,
    "gpu": GpuSection,
    "serving": ServingSection,
    "image": ImageSection,
    "monitoring": MonitoringSection,
    "promote": PromoteSection,
}
REQUIRED_SECTIONS = ("model", "cluster", "registry")
OPTIONAL_SECTIONS = ("promote",)  # absent: None rather than defaults
SCALAR_KEYS = ("recipe",)
SECRET_KEYS = ("registryPassword", "grafanaAdminPassword")
ALL_KEYS = (*SECTIONS, *SCALAR_KEYS, *SECRET_KEYS)


@dataclass(frozen=True)
class StackConfig:
    """Everything the program needs, validated. Secrets are Pulumi Outputs (kept secret)."""

    project: str
    stack: str
    project_dir: Path
    recipe_spec: str
    recipe: Recipe
    model: ModelSection | None  # None on a promoting stack: it builds no model
    artifacts: ArtifactsSection
    cluster: ClusterSection
    registry: RegistrySection
    gpu: GpuSection
    serving: ServingSection
    image: ImageSection
    monitoring: MonitoringSection
    promote: PromoteSection | None = None
    secrets: dict[str, Any] = field(default_factory=dict)
    release: SourceRelease | None = None
    """What a promoting stack deploys: its source stack's outputs, read and checked by load_stack_config."""

    @property
    def namespace(self) -> str:
        return self.serving.namespace or stack_namespace(self.project, self.stack)

    @property
    def model_name(self) -> str:
        if self.model is None:
            assert self.release is not None, "a promoting stack's model name comes from its source's outputs"
            return self.release.model_name
        return self.model.name or dns_label(Path(self.model.source).stem)

    @property
    def uses_gpu(self) -> bool:
        return self.serving.gpu > 0

    def path(self, relative: str) -> Path:
        """A config path, relative to the project directory."""
        p = Path(relative)
        return p if p.is_absolute() else self.project_dir / p


def stack_file(stack: str) -> str:
    return f"Pulumi.{stack}.yaml"


def parse_stack_config(
    raw: dict[str, str],
    *,
    project: str,
    stack: str,
    project_dir: Path,
    check_files: bool = True,
) -> StackConfig:
    """Validate raw config (full 'ns:key' -> value as the engine passes it: objects JSON-encoded).

    Secrets are only checked for presence here; `load_stack_config` reads them.
    """
    where = stack_file(stack)
    problems: list[str] = []
    own = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith(f"{project}:")}

    for key in own:
        if key not in ALL_KEYS:
            problems.append(f"{where}: {project}:{key}: unknown key{_did_you_mean(key, ALL_KEYS)}")

    promoting = "promote" in own
    sections: dict[str, Any] = {}
    for name, model in SECTIONS.items():
        key = f"{project}:{name}"
        if promoting and name == "model":
            sections[name] = None
            if name in own:
                problems.append(f"{where}: {key}: a promoting stack builds no model ({project}:promote.from names "
                                f"the stack it takes the model from); remove {key}")
            continue
        if name not in own:
            if name in REQUIRED_SECTIONS:
                problems.append(f"{where}: {key}: missing; expected an object ({_fields_of(model)})")
                continue
            sections[name] = None if name in OPTIONAL_SECTIONS else model()
            continue
        value = _decode(own[name])
        if not isinstance(value, dict):
            problems.append(f"{where}: {key}: expected an object ({_fields_of(model)}), got {value!r}")
            continue
        try:
            sections[name] = model.model_validate(value)
        except ValidationError as exc:
            problems.extend(_describe(exc, where, key, model))

    recipe_spec = own.get("recipe", "int8-dynamic")
    recipe: Recipe | None = None
    try:
        recipe = load_recipe(recipe_spec, base_dir=project_dir)
    except RecipeError as exc:
        problems.append(f"{where}: {project}:recipe: {exc}")

    if problems:
        raise ConfigError(problems)
    assert recipe is not None
    model_section = sections.get("model")
    if isinstance(model_section, ModelSection) and model_section.target_cpu:  # the stack names its nodes' CPU
        quantize = recipe.quantize.model_copy(update={"target_cpu": model_section.target_cpu})
        recipe = recipe.model_copy(update={"quantize": quantize})
    cfg = StackConfig(project=project, stack=stack, project_dir=project_dir, recipe_spec=recipe_spec,
                      recipe=recipe, **sections)
    problems = _check_combinations(cfg, own, where)
    if check_files:
        problems += _check_files(cfg, where)
    if problems:
        raise ConfigError(problems)
    return cfg


def _check_combinations(cfg: StackConfig, own: dict[str, str], where: str) -> list[str]:
    """Rules that span keys: each names both keys and how to fix it."""
    p = cfg.project
    out: list[str] = []
    cpu_only = cfg.gpu.pool == "none"
    if cfg.recipe.needs_gpu and cpu_only:
        out.append(f"{where}: {p}:recipe: '{cfg.recipe_spec}' converts to fp16, which needs a GPU, but {p}:gpu.pool is "
                   "'none'; use an int8 recipe (int8-dynamic, int8-static) on CPU stacks or add a GPU pool")
    if cfg.serving.gpu and cpu_only:
        out.append(f"{where}: {p}:serving.gpu: {cfg.serving.gpu} GPU(s) requested but {p}:gpu.pool is 'none'; "
                   "set gpu.pool to eks-managed or karpenter, or serving.gpu to 0")
    if not cpu_only and cfg.cluster.provider != "eks":
        out.append(f"{where}: {p}:gpu.pool: '{cfg.gpu.pool}' provisions EKS nodes but {p}:cluster.provider is "
                   f"'{cfg.cluster.provider}'; use cluster.provider 'eks' or gpu.pool 'none'")
    if not cpu_only and not cfg.gpu.instance_types:
        out.append(f"{where}: {p}:gpu.instanceTypes: empty; list GPU instance types such as ['g5.xlarge']")
    if cfg.gpu.pool == "karpenter" and cfg.gpu.ami_alias is None:
        out.append(f"{where}: {p}:gpu.amiAlias: required for a karpenter pool; pin an EKS AMI release, e.g. "
                   "al2023@v20251103 (github.com/awslabs/amazon-eks-ami/releases): al2023@latest replaces every GPU "
                   "node whenever AWS publishes an AMI")
    if cfg.gpu.pool == "eks-managed" and not cfg.gpu.min_size <= cfg.gpu.desired_size <= cfg.gpu.max_size:
        out.append(f"{where}: {p}:gpu: need minSize <= desiredSize <= maxSize, got {cfg.gpu.min_size} <= "
                   f"{cfg.gpu.desired_size} <= {cfg.gpu.max_size}")
    out += _check_cluster(cfg, where)
    out += _check_registry(cfg, where)
    out += _check_scaling(cfg, where)
    out += _check_rollout(cfg, where)
    if cfg.model is not None:
        out += _check_model(cfg, where)
    if cfg.monitoring.mode == "kube-prometheus-stack" and not cfg.monitoring.chart_version:
        out.append(f"{where}: {p}:monitoring.chartVersion: kube-prometheus-stack needs a pinned chart version")
    if cfg.monitoring.mode != "lightweight" and (cfg.monitoring.prometheus_image or not cfg.monitoring.grafana):
        out.append(f"{where}: {p}:monitoring: prometheusImage and grafana apply to mode 'lightweight', not "
                   f"'{cfg.monitoring.mode}'; remove them")
    out += _missing_secrets(cfg, own, where)
    return out


def _check_model(cfg: StackConfig, where: str) -> list[str]:
    p, m = cfg.project, cfg.model
    assert m is not None
    out = []
    if cfg.recipe.needs_calibration and not m.calibration_data:
        out.append(f"{where}: {p}:model.calibrationData: recipe '{cfg.recipe_spec}' quantizes statically and needs a "
                   "calibration set (.npz with the input under 'x'); set it or use int8-dynamic")
    if m.training_data and not cfg.recipe.trains:
        out.append(f"{where}: {p}:model.trainingData: recipe '{cfg.recipe_spec}' trains nothing (no finetune or "
                   "distill); remove trainingData or use a recipe that fine-tunes")
    if cfg.recipe.trains and not (m.training_data or m.calibration_data):
        out.append(f"{where}: {p}:model.trainingData: recipe '{cfg.recipe_spec}' fine-tunes the compressed model and "
                   "needs rows to train on (.npz, inputs only); set trainingData or calibrationData")
    if m.resolved_format == "state_dict" and not m.factory:
        out.append(f"{where}: {p}:model.factory: a state_dict source needs 'package.module:function' that builds "
                   "the architecture")
    if m.factory and m.resolved_format != "state_dict":
        out.append(f"{where}: {p}:model.factory: only used with format 'state_dict', but the source is "
                   f"'{m.resolved_format}'; remove it")
    return out


def _check_cluster(cfg: StackConfig, where: str) -> list[str]:
    p, c = cfg.project, cfg.cluster
    out = []
    if c.provider == "eks" and not (c.name and c.region):
        out.append(f"{where}: {p}:cluster: provider 'eks' needs 'name' and 'region' of the existing EKS cluster")
    if c.provider in ("kind", "existing") and not c.context:
        out.append(f"{where}: {p}:cluster.context: provider '{c.provider}' needs the kubeconfig context to deploy to "
                   "(`kubectl config get-contexts`)")
    return out


def _check_registry(cfg: StackConfig, where: str) -> list[str]:
    p, r = cfg.project, cfg.registry
    out = []
    if r.type == "local" and cfg.cluster.provider != "kind":
        out.append(f"{where}: {p}:registry.type: 'local' runs next to a kind cluster, but cluster.provider is "
                   f"'{cfg.cluster.provider}'; use 'ecr' or 'external'")
    if r.type == "external" and not r.url:
        out.append(f"{where}: {p}:registry: type 'external' needs 'url' (and 'username' unless it takes "
                   "anonymous pushes)")
    if r.type != "local" and not r.manage:
        out.append(f"{where}: {p}:registry.manage: false only applies to type 'local' (reuse the cluster's "
                   f"registry), not '{r.type}'")
    if r.type != "external" and (r.url or r.username):
        out.append(f"{where}: {p}:registry: 'url'/'username' only apply to type 'external', not '{r.type}'")
    return out


def _check_scaling(cfg: StackConfig, where: str) -> list[str]:
    p, s = cfg.project, cfg.serving
    out = []
    if s.autoscaling.enabled and s.autoscaling.min_replicas > s.autoscaling.max_replicas:
        out.append(f"{where}: {p}:serving.autoscaling: minReplicas {s.autoscaling.min_replicas} > maxReplicas "
                   f"{s.autoscaling.max_replicas}")
    if s.autoscaling.metric == "queue" and cfg.monitoring.mode == "none":
        out.append(f"{where}: {p}:serving.autoscaling.metric: 'queue' is read from the stack's Prometheus, but "
                   f"{p}:monitoring.mode is 'none'; set monitoring.mode or use metric 'cpu'")
    floor = s.autoscaling.min_replicas if s.autoscaling.enabled else s.replicas
    if s.pdb.enabled and s.pdb.min_available >= floor:
        out.append(f"{where}: {p}:serving.pdb.minAvailable: {s.pdb.min_available} must be below the replica count "
                   f"({floor}), or no pod could ever be evicted and node drains would hang")
    if s.gpu and s.autoscaling.enabled and cfg.gpu.pool == "eks-managed" and \
            s.autoscaling.max_replicas * s.gpu > cfg.gpu.max_size * 8:
        out.append(f"{where}: {p}:serving.autoscaling.maxReplicas: {s.autoscaling.max_replicas} pods x {s.gpu} GPU "
                   f"cannot fit on gpu.maxSize {cfg.gpu.max_size} nodes")
    return out


def _check_rollout(cfg: StackConfig, where: str) -> list[str]:
    p, r = cfg.project, cfg.serving.rollout
    key = f"{where}: {p}:serving.rollout"
    if r.strategy == "rolling":
        given = [name for name, value in (("steps", r.steps), ("analysis", r.analysis)) if value]
        return [f"{key}: {' and '.join(given)} apply to strategy 'canary', not 'rolling'; set strategy: canary "
                "or remove them"] if given else []
    out = []
    weights = [step.weight for step in r.steps]
    if not weights:
        out.append(f"{key}.steps: strategy 'canary' needs at least one step, such as [{{weight: 50, pauseS: 60}}]")
    if any(b <= a for a, b in itertools.pairwise(weights)):
        out.append(f"{key}.steps: weights must increase from step to step, got {weights}")
    if 100 in weights[:-1]:
        out.append(f"{key}.steps: weight 100 at step {weights.index(100) + 1} of {len(weights)} promotes the "
                   "canary there, so the later steps would never run; drop them or lower that weight")
    if r.analysis is not None:
        if cfg.monitoring.mode == "none":
            out.append(f"{key}.analysis: the analysis queries the stack's Prometheus, but {p}:monitoring.mode is "
                       "'none'; set monitoring.mode (lightweight or kube-prometheus-stack) or remove analysis")
        short = [i + 1 for i, step in enumerate(r.steps) if step.pause_s < r.analysis.interval_s]
        if short:
            out.append(f"{key}.steps: step(s) {short} pause less than analysis.intervalS ({r.analysis.interval_s} s), "
                       "so nothing would be measured there; lengthen pauseS or shorten intervalS")
    return out


def _missing_secrets(cfg: StackConfig, own: dict[str, str], where: str) -> list[str]:
    needed = []
    if cfg.monitoring.mode != "none" and cfg.monitoring.grafana:
        needed.append(("grafanaAdminPassword", "the Grafana admin password"))
    if cfg.registry.type == "external" and cfg.registry.username:
        needed.append(("registryPassword", f"the password of {cfg.registry.username}@{cfg.registry.url}"))
    return [
        f"{where}: {cfg.project}:{key}: missing secret ({what}); run "
        f"`pulumi config set --secret --stack {cfg.stack} {key}` and paste the value at the prompt"
        for key, what in needed
        if key not in own
    ]


def _check_files(cfg: StackConfig, where: str) -> list[str]:
    out = []
    m = cfg.model
    files = {} if m is None else {"model.source": m.source, "model.validationData": m.validation_data,
                                  "model.calibrationData": m.calibration_data, "model.trainingData": m.training_data}
    for key, value in files.items():
        if value is None or value.startswith("s3://"):
            continue
        if not cfg.path(value).is_file():
            hint = " (run `make examples` to build the example models)" if value.startswith("examples/") else ""
            out.append(f"{where}: {cfg.project}:{key}: file '{value}' does not exist{hint}")
    wheelhouse = cfg.image.wheelhouse
    if wheelhouse is not None and m is not None and not any(cfg.path(wheelhouse).glob("*.whl")):
        out.append(f"{where}: {cfg.project}:image.wheelhouse: '{wheelhouse}' holds no .whl files (fill it with "
                   "`python scripts/wheelhouse.py DIR`, or unset it to install from the package index)")
    return out


def _decode(value: str) -> Any:
    """The engine hands objects over JSON-encoded; plain strings stay strings."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _fields_of(model: type[_Section]) -> str:
    return "keys: " + ", ".join(f.alias or n for n, f in model.model_fields.items())


def _did_you_mean(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _describe(exc: ValidationError, where: str, key: str, model: type[_Section]) -> list[str]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        full = f"{key}.{path}" if path else key
        if err["type"] == "extra_forbidden":
            owner = _nested_model(model, err["loc"][:-1])
            known = [f.alias or n for n, f in owner.model_fields.items()]
            out.append(f"{where}: {full}: unknown key{_did_you_mean(str(err['loc'][-1]), known)} "
                       f"(known keys: {', '.join(known)})")
        elif err["type"] == "missing":
            out.append(f"{where}: {full}: missing; it is required")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{where}: {full}: {msg}; got {err.get('input')!r}{_type_hint(err, full)}")
    return out


def _type_hint(err: Any, key: str) -> str:
    """`pulumi config set --path` types true/false and integers itself but stores '0.3' as a string."""
    value = err.get("input")
    if err["type"] != "float_type" or not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return f" (a string: set it with `pulumi config set --path {key} {value} --type float`)"


def _nested_model(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """Follow an error location through nested sections to the model that owns its last key."""
    current = model
    for part in loc:
        by_alias = {f.alias or n: f for n, f in current.model_fields.items()}
        field_info = by_alias.get(str(part))
        current = _section_in(field_info.annotation if field_info else None) or current
    return current


def _section_in(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds: itself, or inside `list[...]` / `... | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in typing.get_args(annotation) if (found := _section_in(arg))), None)


def load_stack_config() -> StackConfig:
    """Read and validate the current stack's config from the Pulumi engine."""
    import pulumi
    from pulumi.runtime.config import CONFIG  # the only way to list every key, which unknown-key checks need

    project, stack = pulumi.get_project(), pulumi.get_stack()
    project_dir = _project_dir(pulumi.runtime.get_root_directory())
    raw = dict(CONFIG.get())
    cfg = parse_stack_config(raw, project=project, stack=stack, project_dir=project_dir)
    reader = pulumi.Config(project)
    secrets = {key: reader.require_secret(key) for key in SECRET_KEYS if f"{project}:{key}" in raw}
    release = None
    if cfg.promote is not None:
        try:
            release = read_release(cfg.promote.from_)
        except ValueError as exc:
            raise ConfigError([f"{stack_file(stack)}: {project}:promote.from: {exc}"]) from None
    return replace(cfg, secrets=secrets, release=release, monitoring=_pinned_images(cfg))


def _pinned_images(cfg: StackConfig) -> MonitoringSection:
    """The monitoring section with its Prometheus image pinned by digest (a loopback registry's tag looked up)."""
    ref = cfg.monitoring.prometheus_image
    if ref is None or image_ref.is_pinned(ref):
        return cfg.monitoring
    try:
        return cfg.monitoring.model_copy(update={"prometheus_image": image_ref.pin(ref)})
    except image_ref.ImageRefError as exc:
        raise ConfigError([f"{stack_file(cfg.stack)}: {cfg.project}:monitoring.prometheusImage: {exc}"]) from None


def _project_dir(engine_root: str | None) -> Path:
    """The directory of Pulumi.yaml: the engine's root, else the one above this package."""
    if engine_root and (Path(engine_root) / "Pulumi.yaml").is_file():
        return Path(engine_root)
    return Path(__file__).resolve().parents[1]
