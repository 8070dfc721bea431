"""ModelService on both stack files: hardening, probes, rollout, scaling, network and scheduling."""

from __future__ import annotations

import copy
import re

import pytest

from components.model_service import ENV_PREFIX, ModelServiceArgs
from components.scheduling import GPU_NODE_LABEL, GPU_RESOURCE
from serving.settings import Settings
from tests.policy.manifests import to_manifest
from tests.pulumi_harness import stack_config

STACKS = ("dev", "prod", "local")
STABLE = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def _obj(run, kind: str, component: str = "modelstack:index:ModelService") -> dict:
    parent = run.one(component).urn
    (found,) = [to_manifest(r) for r in run.resources if r.type.endswith(f":{kind}") and r.parent == parent]
    return found


def _workload(run) -> dict:
    """The serving pods' owner: a Deployment (strategy rolling) or an Argo Rollout (canary, the local stack)."""
    (found,) = [o for kind in ("Deployment", "Rollout") for o in _all(run, kind)]
    return found


def _all(run, kind: str) -> list[dict]:
    parent = run.one("modelstack:index:ModelService").urn
    return [to_manifest(r) for r in run.resources if r.type.endswith(f":{kind}") and r.parent == parent]


def _pod(run) -> tuple[dict, dict]:
    spec = _workload(run)["spec"]["template"]["spec"]
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
    deployment = _workload(run)
    pod, container = _pod(run)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # room for model load + warm-up
    strategy = deployment["spec"]["strategy"]
    assert (strategy.get("rollingUpdate") or strategy.get("canary"))["maxUnavailable"] == 0
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] < pod["terminationGracePeriodSeconds"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    port = stack_config(stack)["modelstack:serving"].get("port", 8080)
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(port)
    assert container["ports"][0] == {"name": "http", "containerPort": port, "protocol": "TCP"}


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
    deployment = _workload(run)
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
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    # Out: the cluster DNS only (by its named ports, whatever port CoreDNS listens on).
    (dns,) = policy["egress"]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert dns["ports"] == [{"port": "dns", "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]
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


def _alert_threshold(run, alert: str) -> str:
    """The threshold an alert rule of the stack's rule file compares against (`... > X`)."""
    rules = next(v for r in run.resources for v in (r.inputs.get("data") or {}).values()
                 if isinstance(v, str) and f"alert: {alert}" in v)
    return re.search(rf"alert: {alert}\n\s+expr: [^\n]* > ([0-9.e-]+)", rules).group(1)


def test_the_local_stack_releases_by_canary_judged_by_the_alerts_own_figures(program):
    run = program("local")
    rollout = _workload(run)
    assert (rollout["apiVersion"], rollout["kind"]) == ("argoproj.io/v1alpha1", "Rollout")
    assert rollout["spec"]["replicas"] == 2 and rollout["spec"]["progressDeadlineAbort"] is True
    step, analysis = rollout["spec"]["strategy"]["canary"]["steps"]
    assert step == {"setWeight": 50}  # then all replicas, once the analysis passed
    assert analysis["analysis"]["templates"] == [{"templateName": "digits-4-checks"}]  # pauseS 60 / intervalS 15
    assert analysis["analysis"]["args"] == [{"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]

    metrics = {m["name"]: m for m in _obj(run, "AnalysisTemplate")["spec"]["metrics"]}
    assert set(metrics) == {"error-ratio", "latency-p99"}
    for metric in metrics.values():
        prometheus = metric["provider"]["prometheus"]
        assert prometheus["address"] == run.outputs["prometheusUrl"]
        assert 'pod=~"digits-{{args.canary-hash}}-.*"' in prometheus["query"]  # the new pods only
        assert metric["interval"] == "15s" and metric["count"] == 4 and metric["failureLimit"] == 0
    # One definition: the fast burn-rate page's 5xx ratio (14.4 x the 1% budget), the latency alert's p99.
    assert metrics["error-ratio"]["successCondition"].endswith("<= 0.144")
    latency = _alert_threshold(run, "ModelstackLatencyP99High")
    assert metrics["latency-p99"]["successCondition"].endswith(f"<= {latency}")
    assert 'code=~"5.."' in metrics["error-ratio"]["provider"]["prometheus"]["query"]

    status = run.named("serving-rollout-status")
    assert run.serving_workload().urn in status.dependencies
    assert status.inputs["revision"].startswith(run.outputs["image"] + " settings=")
    assert status.inputs["kubeContext"] == "modelstack-local" and status.inputs["timeoutS"] == 900


def test_a_canary_under_an_hpa_leaves_it_the_replica_count(program):
    cfg = copy.deepcopy(stack_config("local"))
    cfg["modelstack:serving"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}
    run = program("local", config=cfg)
    rollout = _workload(run)
    assert "replicas" not in rollout["spec"]
    # Turning autoscaling off later takes spec.replicas back from the HPA's scale updates: a forced apply.
    assert rollout["metadata"]["annotations"]["pulumi.com/patchForce"] == "true"
    # Deleted in the background: the provider's await of a foreground delete crashes on a Rollout's status.
    assert rollout["metadata"]["annotations"]["pulumi.com/deletionPropagationPolicy"] == "background"
    assert _obj(run, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "digits"}


def test_the_fault_setting_reaches_only_the_new_revisions_pods(program):
    """Tests only: set in the pod template, never in the ConfigMap every revision's pods read."""
    cfg = copy.deepcopy(stack_config("local"))
    cfg["modelstack:serving"]["faultErrorRatio"] = 0.3
    run = program("local", config=cfg)
    _, container = _pod(run)
    assert container["env"] == [{"name": ENV_PREFIX + "FAULT_ERROR_RATIO", "value": "0.3"}]
    assert "fault_error_ratio" in Settings.model_fields  # the server reads that very variable
    assert not [k for k in _obj(run, "ConfigMap")["data"] if "FAULT" in k]
    plain = program("local")
    assert "env" not in _pod(plain)[1]
    revision = lambda r: r.named("serving-rollout-status").inputs["revision"]  # noqa: E731
    assert revision(run) != revision(plain) and revision(plain) == revision(program("local"))  # stable when unchanged


def test_grpc_port_is_exposed_where_the_stack_enables_it(program):
    """serving.grpcPort: the server's setting, a container port, a Service port (h2c) and the policy's ingress."""
    assert "grpcPort" not in stack_config("dev")["modelstack:serving"]
    plain = program("dev")
    assert [p["name"] for p in _obj(plain, "Service")["spec"]["ports"]] == ["http"]
    assert not [k for k in _obj(plain, "ConfigMap")["data"] if "GRPC" in k]
    assert [p["name"] for p in _pod(plain)[1]["ports"]] == ["http"]
    run = program("local")  # Pulumi.local.yaml: grpcPort 8081
    assert _obj(run, "ConfigMap")["data"][ENV_PREFIX + "GRPC_PORT"] == "8081"
    assert "grpc_port" in Settings.model_fields  # the server reads that very variable
    _, container = _pod(run)
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["port"] == "http"  # probes stay on REST
    (grpc_port,) = [p for p in _obj(run, "Service")["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_port == {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
                         "appProtocol": "kubernetes.io/h2c"}
    policy = _obj(run, "NetworkPolicy")
    assert all({"port": 8081, "protocol": "TCP"} in rule["ports"] for rule in policy["spec"]["ingress"])


def test_compute_workers_reach_the_server_only_where_the_stack_sets_them(program):
    """serving.computeWorkers: the server's setting; unset, the server's own default and an unchanged ConfigMap."""
    assert not [k for k in _obj(program("local"), "ConfigMap")["data"] if "WORKERS" in k]
    cfg = copy.deepcopy(stack_config("local"))
    cfg["modelstack:serving"]["computeWorkers"] = 1
    run = program("local", config=cfg)
    assert _obj(run, "ConfigMap")["data"][ENV_PREFIX + "COMPUTE_WORKERS"] == "1"
    assert "compute_workers" in Settings.model_fields  # the server reads that very variable


def test_a_canarys_analysis_may_query_prometheus_through_its_network_policy(program):
    """The Argo Rollouts controller asks Prometheus from its own namespace: its policy lets that namespace in."""
    def prometheus_peers(run) -> list[dict]:
        (policy,) = [to_manifest(r) for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                     if r.inputs["metadata"]["name"] == "prometheus"]
        (rule,) = policy["spec"]["ingress"]
        return rule["from"]

    peers = prometheus_peers(program("local"))
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "argo-rollouts"}}} in peers
    assert any("podSelector" in p for p in peers)  # Grafana's pods, as before
    rolling = copy.deepcopy(stack_config("local"))
    rolling["modelstack:serving"]["rollout"] = {"strategy": "rolling"}
    assert all("namespaceSelector" not in p for p in prometheus_peers(program("local", config=rolling)))


def test_queue_autoscaling_is_a_keda_scaledobject_on_the_requests_in_the_servers(program):
    cfg = copy.deepcopy(stack_config("local"))
    cfg["modelstack:serving"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 3,
                                                "metric": "queue", "targetQueueDepth": 2, "scaleDownWindowS": 15}
    run = program("local", config=cfg)
    assert not _all(run, "HorizontalPodAutoscaler")  # KEDA makes the HPA and owns it
    scaled = _obj(run, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "digits"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    hpa = spec["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 15}
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["serverAddress"] == run.outputs["prometheusUrl"]
    assert trigger["metadata"]["threshold"] == "2"
    assert trigger["metadata"]["query"] == ('sum(rate(modelstack_request_duration_seconds_sum{'
                                            'namespace="modelstack-local",model="digits"}[1m]))')
    (policy,) = [to_manifest(r) for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                 if r.inputs["metadata"]["name"] == "prometheus"]
    let_in = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
              for p in policy["spec"]["ingress"][0]["from"] if "namespaceSelector" in p}
    assert let_in == {"argo-rollouts", "keda"}  # the canary's analysis and KEDA both ask Prometheus


def _policy(run, name: str) -> dict:
    (policy,) = [to_manifest(r) for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                 if r.inputs["metadata"]["name"] == name]
    return policy["spec"]


DNS = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
               "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
       "ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]}


def test_monitoring_pods_reach_dns_their_targets_and_the_api_server_only(program):
    local = _policy(program("local"), "prometheus")
    assert local["policyTypes"] == ["Ingress", "Egress"]
    assert local["egress"] == [
        DNS,
        {"to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}], "ports": [{"port": 36443, "protocol": "TCP"}]},
        {"to": [{"podSelector": {}}]},  # the pods it scrapes, in its namespace
    ]
    # Without the endpoint in the config (dev's kind cluster), the API server's usual ports, any address.
    dev = _policy(program("dev"), "prometheus")["egress"]
    assert dev[1] == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    grafana = _policy(program("dev"), "grafana")
    assert grafana["policyTypes"] == ["Ingress", "Egress"]
    assert grafana["egress"] == [DNS, {"to": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "modelstack-dev"}}}],
        "ports": [{"port": 9090, "protocol": "TCP"}]}]

