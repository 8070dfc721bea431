"""ModelService on both stack files: hardening, probes, rollout, scaling, network and scheduling."""

from __future__ import annotations

import copy
import re

import pytest

from components.model_service import ENV_PREFIX, ModelServiceArgs
from components.scheduling import GPU_NODE_LABEL, GPU_RESOURCE
from tests.policy.manifests import to_manifest
from tests.pulumi_harness import stack_config

STACKS = ("dev", "prod", "local")
STABLE = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def _obj(run, kind: str, component: str = "modelstack:index:ModelService") -> dict:
    parent = run.one(component).urn
    (found,) = [to_manifest(r) for r in run.resources if r.type.endswith(f":{kind}") and r.parent == parent]
    return found


def _pod(run) -> tuple[dict, dict]:
    spec = _obj(run, "Deployment")["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


@pytest.mark.parametrize("stack", STACKS)
def test_deployment_is_hardened_and_pinned(program, stack):
    run = program(stack)
    pod, container = _pod(run)
    assert re.fullmatch(r"[^@]+/[a-z0-9/-]+:[0-9a-f]{12}-[0-9a-f]{8}(-gpu)?@sha256:[0-9a-f]{64}", container["image"])
    assert run.outputs["image"] == container["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] == 10001
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


@pytest.mark.parametrize("stack", STACKS)
def test_probes_rollout_and_shutdown(program, stack):
    run = program(stack)
    deployment = _obj(run, "Deployment")
    pod, container = _pod(run)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # room for model load + warm-up
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] < pod["terminationGracePeriodSeconds"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    port = stack_config(stack)["modelstack:serving"].get("port", 8080)
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(port)
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]


@pytest.mark.parametrize("stack", STACKS)
def test_server_settings_come_from_the_configmap(program, stack):
    run = program(stack)
    cfg = stack_config(stack)["modelstack:serving"]
    data = _obj(run, "ConfigMap")["data"]
    assert all(key.startswith(ENV_PREFIX) for key in data)
    assert data[ENV_PREFIX + "MAX_BATCH_SIZE"] == str(cfg["maxBatchSize"])
    assert float(data[ENV_PREFIX + "MAX_QUEUE_DELAY_MS"]) == cfg["maxQueueDelayMs"]
    assert data[ENV_PREFIX + "MAX_QUEUE_SIZE"] == str(cfg.get("maxQueueSize", 256))
    assert data[ENV_PREFIX + "PORT"] == str(cfg.get("port", 8080))
    _, container = _pod(run)
    assert container["envFrom"] == [{"configMapRef": {"name": _obj(run, "ConfigMap")["metadata"]["name"]}}]


@pytest.mark.parametrize("stack", STACKS)
def test_selectors_use_only_the_stable_labels(program, stack):
    run = program(stack)
    deployment = _obj(run, "Deployment")
    selectors = [deployment["spec"]["selector"]["matchLabels"], _obj(run, "Service")["spec"]["selector"],
                 _obj(run, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]]
    if stack == "prod":
        selectors.append(_obj(run, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in selectors:
        assert set(selector) == STABLE
        assert selector.items() <= pod_labels.items()


def test_prod_serving_pods_land_on_gpu_nodes(program):
    run = program("prod")
    pod, container = _pod(run)
    assert container["resources"]["limits"][GPU_RESOURCE] == "1"
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    node_group = run.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert pod["nodeSelector"].items() <= node_group["labels"].items()
    assert node_group["taints"] == [{"key": GPU_RESOURCE, "value": "present", "effect": "NO_SCHEDULE"}]
    assert _obj(run, "ConfigMap")["data"][ENV_PREFIX + "DEVICE"] == "cuda"


def test_prod_has_hpa_pdb_and_network_policy_for_the_deployment(program):
    run = program("prod")
    cfg = stack_config("prod")["modelstack:serving"]
    deployment = _obj(run, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    hpa = _obj(run, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (cfg["autoscaling"]["minReplicas"],
                                                         cfg["autoscaling"]["maxReplicas"])
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == cfg["autoscaling"]["targetCpuUtilization"]
    assert _obj(run, "PodDisruptionBudget")["spec"]["minAvailable"] == cfg["pdb"]["minAvailable"]
    policy = _obj(run, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    allowed = [{p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]}
               for rule in policy["ingress"]]
    assert allowed == [{"api-gateway", "modelstack-prod"}, {"monitoring"}]
    assert all(rule["ports"] == [{"port": 8080, "protocol": "TCP"}] for rule in policy["ingress"])


def test_dev_is_cpu_only_without_autoscaling(program):
    run = program("dev")
    pod, container = _pod(run)
    assert _obj(run, "Deployment")["spec"]["replicas"] == 1
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert not [r for r in run.resources if "HorizontalPodAutoscaler" in r.type or "PodDisruptionBudget" in r.type]
    pool = run.one("modelstack:index:GpuNodePool")
    assert not [r for r in run.resources if r.parent == pool.urn]
    assert not [r for r in run.resources if r.type.startswith("aws:")]


def test_cpu_autoscaling_on_a_cpu_stack(program):
    cfg = copy.deepcopy(stack_config("dev"))
    cfg["modelstack:serving"]["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 4,
                                                "targetCpuUtilization": 60, "scaleDownWindowS": 30}
    cfg["modelstack:serving"]["pdb"] = {"enabled": True, "minAvailable": 1}
    run = program("dev", config=cfg)
    hpa = _obj(run, "HorizontalPodAutoscaler")["spec"]
    assert hpa["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    assert hpa["behavior"] == {"scaleUp": {"stabilizationWindowSeconds": 0},
                               "scaleDown": {"stabilizationWindowSeconds": 30}}
    assert _obj(run, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("gpu", {"pool": "none"}, "gpu.pool is 'none'"),
    ("serving.autoscaling", {"enabled": True, "minReplicas": 5, "maxReplicas": 2}, "minReplicas 5 > maxReplicas 2"),
    ("serving.pdb", {"enabled": True, "minAvailable": 3}, "must be below the replica count"),
])
def test_invalid_combinations_register_nothing(program, path, value, expected):
    cfg = copy.deepcopy(stack_config("prod"))
    section, *rest = path.split(".")
    target = cfg[f"modelstack:{section}"]
    if rest:
        target[rest[0]] = value
    else:
        cfg[f"modelstack:{section}"] = value
    if path == "serving.pdb":
        cfg["modelstack:serving"]["autoscaling"]["minReplicas"] = 3
    run = program("prod", config=cfg, raise_errors=False)
    assert expected in str(run.error)
    assert run.resources == []


def test_unpinned_images_are_rejected():
    with pytest.raises(ValueError, match="pinned by digest"):
        ModelServiceArgs(namespace="ns", model_name="m", instance="ns", image="registry.example.com/m:latest")
    with pytest.raises(ValueError, match="GPU scheduling"):
        ModelServiceArgs(namespace="ns", model_name="m", instance="ns", gpu=1,
                         image="r.example.com/m@sha256:" + "a" * 64)


def test_gpu_nodes_are_labelled_for_the_serving_pods(program):
    pod, _ = _pod(program("prod"))
    assert GPU_NODE_LABEL in pod["nodeSelector"]


def test_endpoint_is_exported(program):
    run = program("dev")
    assert run.outputs["endpoint"] == "http://digits.modelstack-dev.svc.cluster.local:8080"
