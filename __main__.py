"""modelstack: one Pulumi program from a trained model to a monitored service.

Thin on purpose: load and validate the stack config (nothing is registered if
it is bad), build the components in order, export what operators look at.
Never import torch here: it would land on every `pulumi preview`.
"""

import dataclasses

import pulumi

from components.cluster import kubernetes_provider
from components.config import ConfigError, load_stack_config
from components.gpu_node_pool import GpuNodePool, GpuNodePoolArgs, eks_subnet_ids
from components.model_service import CanaryAnalysis, ModelService, ModelServiceArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.optimized_model import FIGURE_KEYS, OptimizedModel, OptimizedModelArgs
from components.promotion import Promotion, PromotionArgs
from components.registry import Registry, RegistryArgs
from components.serving_image import RegistryLogin, ServingImage, ServingImageArgs

try:
    cfg = load_stack_config()
except ConfigError as exc:
    # RunError: the CLI prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(exc)) from None

k8s_provider = kubernetes_provider(cfg)
providers: dict[str, pulumi.ProviderResource] = {"kubernetes": k8s_provider}
if cfg.registry.type == "ecr" or cfg.gpu.pool != "none":
    import pulumi_aws as aws

    providers["aws"] = aws.Provider("aws", region=cfg.cluster.region or cfg.artifacts.region)
opts = pulumi.ResourceOptions(providers=providers)

registry = Registry("registry", RegistryArgs.from_config(cfg), opts=opts)
gate = cfg.recipe.gate.model_dump()

if cfg.release is not None:
    # Promotion: exactly the model and image the source stack tested, by digest; nothing is built.
    pulumi.log.info(cfg.release.summary)
    promotion = Promotion("promotion", PromotionArgs(
        release=cfg.release, store_uri=cfg.artifacts.store, store_region=cfg.artifacts.region,
        store_endpoint=cfg.artifacts.endpoint, project_dir=str(cfg.project_dir),
        repository=registry.repository_url, registry_host=registry.known_host, gate=gate))
    image_ref: pulumi.Output[str] = promotion.image
    figures = {key: pulumi.Output.from_input(value) for key, value in cfg.release.figures.items()}
    model_digest, model_artifact = pulumi.Output.from_input(cfg.release.model_digest), promotion.artifact_uri
    pulumi.export("promotedFrom", cfg.release.stack)
else:
    # The optimize step: built (and gated) before any image, shared by digest across stacks.
    model = OptimizedModel("model", OptimizedModelArgs.from_config(cfg))
    login = None
    if cfg.registry.type == "ecr" or cfg.registry.username:  # local and anonymous registries take no login
        login = RegistryLogin(address=registry.host, username=registry.username, password=registry.password)
    image = ServingImage(
        "image",
        ServingImageArgs(
            repository=registry.repository_url,
            cache_repository=registry.cache_repository_url,
            model_digest=model.digest,
            store_uri=cfg.artifacts.store,
            store_region=cfg.artifacts.region,
            store_endpoint=cfg.artifacts.endpoint,
            project_dir=str(cfg.project_dir),
            gpu=cfg.uses_gpu,
            login=login,
            registry_cache=cfg.image.registry_cache,
            builder=cfg.image.builder,
            base_image=cfg.image.base_image,
            wheelhouse=str(cfg.path(cfg.image.wheelhouse)) if cfg.image.wheelhouse else None,
        ),
    )
    image_ref = image.ref
    figures = {key: getattr(model, key) for key in ("sizeRatio", *FIGURE_KEYS, "latencyP50Ms", "latencyP99Ms")}
    model_digest, model_artifact = model.digest, model.artifactUri

subnets = None
if cfg.gpu.pool == "eks-managed":
    assert cfg.cluster.name  # config requires it for GPU pools
    subnets = eks_subnet_ids(cfg.cluster.name, pulumi.InvokeOutputOptions(provider=providers["aws"]))
gpu = GpuNodePool("gpu", GpuNodePoolArgs.from_config(cfg, subnet_ids=subnets), opts=opts)

monitoring_args = analysis = None
if cfg.monitoring.mode != "none":
    # The latency alert's threshold follows the model's benchmarked p99, so it tightens as models get faster.
    monitoring_args = MonitoringArgs.from_config(cfg, benchmark_p99_ms=figures["latencyP99Ms"],
                                                 gpu_scheduling=gpu.scheduling)
    # A canary is judged by the alerts' own figures, asked of the same Prometheus.
    analysis = CanaryAnalysis(prometheus_url=monitoring_args.prometheus_url, params=pulumi.Output.from_input(
        figures["latencyP99Ms"]).apply(lambda ms: monitoring_args.alert_params(float(ms))))

service = ModelService(
    "serving",
    ModelServiceArgs.from_config(cfg, image=image_ref, scheduling=gpu.scheduling, analysis=analysis,
                                 prometheus_url=monitoring_args.prometheus_url if monitoring_args else None),
    opts=opts,
)

monitoring = None
if monitoring_args is not None:
    monitoring = Monitoring("monitoring", dataclasses.replace(monitoring_args, depends_on=[service]), opts=opts)

pulumi.export("namespace", service.namespace)
pulumi.export("endpoint", service.endpoint)
pulumi.export("image", image_ref)
pulumi.export("registry", registry.host)
pulumi.export("modelName", cfg.model_name)
pulumi.export("recipe", cfg.recipe.name)
pulumi.export("gate", gate)  # what a stack promoting from this one checks the figures against
pulumi.export("modelDigest", model_digest)
pulumi.export("modelArtifact", model_artifact)
for key, value in figures.items():  # sizeRatio, latency, the task and the gate's figures (FIGURE_KEYS)
    pulumi.export(key, value)
if monitoring is not None:
    if monitoring.grafana_url is not None:  # the local stack runs no Grafana
        pulumi.export("grafanaUrl", monitoring.grafana_url)
        pulumi.export("grafanaPortForward", monitoring.grafana_port_forward)
    pulumi.export("prometheusUrl", monitoring.prometheus_url)
