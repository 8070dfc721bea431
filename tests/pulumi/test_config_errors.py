"""Bad config fails before anything is registered, with one line per problem naming key, file and fix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from tests.pulumi_harness import stack_config

Mutation = Callable[[dict[str, Any]], None]


def setting(path: str, value: Any) -> Mutation:
    """Set 'section.key.sub' in a stack's config (section = modelstack:<section>)."""

    def apply(cfg: dict[str, Any]) -> None:
        section, *rest = path.split(".")
        target = cfg.setdefault(f"modelstack:{section}", {})
        if not rest:
            cfg[f"modelstack:{section}"] = value
            return
        for key in rest[:-1]:
            target = target.setdefault(key, {})
        target[rest[-1]] = value

    return apply


def removing(key: str) -> Mutation:
    return lambda cfg: cfg.pop(f"modelstack:{key}")


CASES: list[tuple[str, str, Mutation, list[str]]] = [
    ("typo-nested", "dev", setting("serving.replica", 2),
     ["Pulumi.dev.yaml", "modelstack:serving.replica", "unknown key", "did you mean 'replicas'"]),
    ("typo-top-level", "dev", setting("servng", {"replicas": 1}),
     ["modelstack:servng", "unknown key", "did you mean 'serving'"]),
    ("typo-deep", "prod", setting("serving.autoscaling.maxReplica", 4),
     ["modelstack:serving.autoscaling.maxReplica", "did you mean 'maxReplicas'"]),
    ("wrong-type", "dev", setting("serving.replicas", "three"),
     ["modelstack:serving.replicas", "valid integer", "'three'"]),
    ("string-for-bool", "prod", setting("serving.autoscaling.enabled", "yes"),
     ["modelstack:serving.autoscaling.enabled", "valid boolean", "'yes'"]),
    ("out-of-range", "dev", setting("serving.replicas", 0),
     ["modelstack:serving.replicas", "greater than or equal to 1", "got 0"]),
    ("bad-choice", "dev", setting("cluster.provider", "gke"),
     ["modelstack:cluster.provider", "'kind', 'eks' or 'existing'", "'gke'"]),
    ("section-not-object", "dev", setting("serving", "big"),
     ["modelstack:serving", "expected an object", "replicas"]),
    ("missing-section", "dev", removing("cluster"),
     ["modelstack:cluster", "missing"]),
    ("bad-quantity", "dev", setting("serving.memory", "1GB"),
     ["modelstack:serving.memory", "memory quantity", "'1GB'"]),
    ("unknown-recipe", "dev", setting("recipe", "int4-magic"),
     ["modelstack:recipe", "int4-magic", "int8-dynamic"]),
    ("fp16-on-cpu", "dev", setting("recipe", "fp16"),
     ["modelstack:recipe", "fp16", "gpu.pool is 'none'"]),
    ("gpu-without-pool", "dev", setting("serving.gpu", 1),
     ["modelstack:serving.gpu", "gpu.pool is 'none'"]),
    ("hpa-min-above-max", "prod", setting("serving.autoscaling.minReplicas", 12),
     ["modelstack:serving.autoscaling", "minReplicas 12 > maxReplicas 10"]),
    ("pdb-blocks-evictions", "prod", setting("serving.pdb.minAvailable", 3),
     ["modelstack:serving.pdb.minAvailable", "must be below the replica count (3)"]),
    ("gpu-pool-off-eks", "dev", setting("gpu.pool", "karpenter"),
     ["modelstack:gpu.pool", "cluster.provider is 'kind'", "modelstack:gpu.instanceTypes"]),
    ("karpenter-ami-unpinned", "prod", setting("gpu.pool", "karpenter"),
     ["modelstack:gpu.amiAlias", "required for a karpenter pool", "al2023@latest replaces every GPU node"]),
    ("karpenter-ami-latest", "prod", lambda c: (setting("gpu.pool", "karpenter")(c),
                                                setting("gpu.amiAlias", "al2023@latest")(c)),
     ["modelstack:gpu.amiAlias", "al2023@latest"]),
    ("local-registry-on-eks", "prod", setting("registry.type", "local"),
     ["modelstack:registry.type", "'local'", "cluster.provider is 'eks'"]),
    ("static-int8-without-calibration", "dev",
     lambda c: (setting("recipe", "int8-static")(c), c["modelstack:model"].pop("calibrationData")),
     ["modelstack:model.calibrationData", "int8-static"]),
    ("training-data-nothing-trains", "dev", setting("recipe", "int8-dynamic"),
     ["modelstack:model.trainingData", "recipe 'int8-dynamic' trains nothing"]),
    ("missing-model-file", "dev", setting("model.source", "models/nope.pt"),
     ["modelstack:model.source", "models/nope.pt", "does not exist"]),
    ("eks-without-region", "prod", lambda c: c["modelstack:cluster"].pop("region"),
     ["modelstack:cluster", "'name' and 'region'"]),
    ("api-server-by-name", "local", setting("cluster.apiServer", ["kubernetes.default:443"]),
     ["modelstack:cluster.apiServer", "'kubernetes.default:443' is not IPv4:port", "endpointslice kubernetes"]),
    ("bad-namespace-name", "dev", setting("serving.namespace", "Team_A"),
     ["modelstack:serving.namespace", "DNS-1123"]),
    ("external-registry-without-url", "local", lambda c: c["modelstack:registry"].pop("url"),
     ["modelstack:registry", "type 'external' needs 'url'"]),
    ("empty-wheelhouse", "local", setting("image.wheelhouse", "examples"),
     ["modelstack:image.wheelhouse", "'examples' holds no .whl files", "scripts/wheelhouse.py"]),
    ("builder-name-with-space", "local", setting("image.builder", "my builder"),
     ["modelstack:image.builder", "'my builder'"]),
    ("typo-in-image", "local", setting("image.baseimage", "x"),
     ["modelstack:image.baseimage", "did you mean 'baseImage'"]),
    ("prometheus-image-with-the-chart", "prod", setting("monitoring.grafana", False),
     ["modelstack:monitoring", "prometheusImage and grafana apply to mode 'lightweight'"]),
    ("prometheus-image-with-space", "local", setting("monitoring.prometheusImage", "a b"),
     ["modelstack:monitoring.prometheusImage", "'a b'"]),
    ("canary-weights-fall", "local",
     setting("serving.rollout.steps", [{"weight": 50, "pauseS": 60}, {"weight": 25, "pauseS": 60}]),
     ["modelstack:serving.rollout.steps", "weights must increase", "[50, 25]"]),
    ("canary-full-weight-too-early", "local",
     setting("serving.rollout.steps", [{"weight": 100, "pauseS": 60}, {"weight": 100, "pauseS": 60}]),
     ["weight 100 at step 1 of 2", "later steps would never run"]),
    ("canary-analysis-without-prometheus", "local",
     lambda c: (setting("monitoring", {"mode": "none"})(c), c["modelstack:serving"]["rollout"].update(
         analysis={"intervalS": 15})),
     ["modelstack:serving.rollout.analysis", "monitoring.mode is 'none'"]),
    ("canary-pause-shorter-than-a-measurement", "local",
     setting("serving.rollout.steps", [{"weight": 50, "pauseS": 5}]),
     ["modelstack:serving.rollout.steps", "step(s) [1]", "intervalS (15 s)"]),
    ("canary-without-steps", "local", setting("serving.rollout.steps", []),
     ["modelstack:serving.rollout.steps", "at least one step"]),
    ("steps-without-canary", "dev", setting("serving.rollout", {"steps": [{"weight": 50}]}),
     ["modelstack:serving.rollout", "steps apply to strategy 'canary'"]),
    ("typo-in-a-canary-step", "local", setting("serving.rollout.steps", [{"weigth": 50}]),
     ["modelstack:serving.rollout.steps.0.weigth", "did you mean 'weight'"]),
    ("float-given-as-a-string", "local", setting("serving.faultErrorRatio", "0.3"),
     ["modelstack:serving.faultErrorRatio", "got '0.3'",
      "pulumi config set --path modelstack:serving.faultErrorRatio 0.3 --type float"]),
    ("queue-scaling-without-prometheus", "dev",
     lambda c: (setting("monitoring", {"mode": "none"})(c), setting("serving.autoscaling", {
         "enabled": True, "maxReplicas": 2, "metric": "queue"})(c)),
     ["modelstack:serving.autoscaling.metric", "monitoring.mode is 'none'"]),
    ("fault-ratio-above-one", "local", setting("serving.faultErrorRatio", 1.5),
     ["modelstack:serving.faultErrorRatio", "less than or equal to 1"]),
    ("grpc-on-the-rest-port", "local", setting("serving.grpcPort", 8080),
     ["modelstack:serving", "grpcPort 8080 is the REST port too"]),
    ("negative-compute-workers", "local", setting("serving.computeWorkers", -1),
     ["modelstack:serving.computeWorkers", "greater than or equal to 0"]),
]


@pytest.mark.parametrize(("case", "stack", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_fails_with_its_message_and_registers_nothing(program, case, stack, mutate, expected):
    cfg = copy.deepcopy(stack_config(stack))
    mutate(cfg)
    run = program(stack, config=cfg, raise_errors=False)
    assert isinstance(run.error, pulumi.RunError), f"{case}: expected a config error, got {run.error!r}"
    message = str(run.error)
    for text in expected:
        assert text in message, f"{case}: {text!r} not in:\n{message}"
    assert run.resources == [], f"{case}: registered {[r.name for r in run.resources]} despite bad config"


def test_every_problem_is_reported_at_once(program):
    cfg = copy.deepcopy(stack_config("dev"))
    setting("serving.replica", 2)(cfg)
    setting("cluster.provider", "gke")(cfg)
    setting("monitoring.mode", "grafana")(cfg)
    run = program("dev", config=cfg, raise_errors=False)
    lines = [line for line in str(run.error).splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 3, str(run.error)


def test_missing_secret_names_the_command_to_run(program):
    run = program("prod", secrets={}, raise_errors=False)
    message = str(run.error)
    assert "Pulumi.prod.yaml" in message
    assert "pulumi config set --secret --stack prod grafanaAdminPassword" in message
    assert run.resources == []


def test_external_registry_needs_its_password(program):
    cfg = copy.deepcopy(stack_config("prod"))
    cfg["modelstack:registry"] = {"type": "external", "url": "registry.example.com/ml", "username": "ci"}
    run = program("prod", config=cfg, raise_errors=False)
    assert "pulumi config set --secret --stack prod registryPassword" in str(run.error)
    run = program("prod", config=cfg, secrets={"grafanaAdminPassword": "x", "registryPassword": "y"})
    assert run.error is None and run.resources


def test_unchanged_stack_files_are_valid(program):
    for stack in ("dev", "prod", "local"):
        assert program(stack).error is None


def test_unmanaged_registry_is_only_for_local(program):
    cfg = copy.deepcopy(stack_config("prod"))
    cfg["modelstack:registry"]["manage"] = False
    run = program("prod", config=cfg, raise_errors=False)
    assert "modelstack:registry.manage: false only applies to type 'local'" in str(run.error)
    assert run.resources == []


def test_without_grafana_no_grafana_password_is_needed(program):
    assert program("local", secrets={}).error is None
    cfg = copy.deepcopy(stack_config("local"))
    cfg["modelstack:monitoring"]["grafana"] = True
    run = program("local", config=cfg, secrets={}, raise_errors=False)
    assert "pulumi config set --secret --stack local grafanaAdminPassword" in str(run.error)
