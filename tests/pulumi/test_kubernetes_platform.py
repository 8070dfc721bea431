"""Registry and GpuNodePool variants, and secrets, under the mock harness."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from components.gpu_node_pool import NODE_POLICIES
from components.registry import KIND_NETWORK, LOCAL_CONTAINER
from components.scheduling import GPU_RESOURCE
from tests.policy.manifests import manifests, to_yaml
from tests.pulumi_harness import MOCK_ACCOUNT, MOCK_INVOKES, stack_config

ECR_TOKEN = MOCK_INVOKES["aws:ecr/getAuthorizationToken:getAuthorizationToken"]["password"]
REGISTRY_PASSWORD = "registry-pass-91be"
GRAFANA_PASSWORD = "grafana-pass-5d20"


def _external(stack: str) -> dict:
    cfg = copy.deepcopy(stack_config(stack))
    cfg["modelstack:registry"] = {"type": "external", "url": "https://registry.example.com/ml/", "username": "ci"}
    return cfg


def _karpenter() -> dict:
    cfg = copy.deepcopy(stack_config("prod"))
    cfg["modelstack:gpu"] = {"pool": "karpenter", "instanceTypes": ["g5.xlarge", "g6.2xlarge"], "maxSize": 6,
                             "amiAlias": "al2023@v20251103"}
    return cfg


def test_local_registry_sits_on_the_kind_network_with_its_kep_1755_configmap(program):
    run = program("dev")
    container = run.one("docker:index/container:Container").inputs
    assert container["name"] == LOCAL_CONTAINER
    assert container["networksAdvanced"] == [{"name": KIND_NETWORK}]
    assert container["ports"] == [{"internal": 5000, "external": 5001, "ip": "127.0.0.1"}]
    assert "@sha256:" in run.one("docker:index/remoteImage:RemoteImage").inputs["name"]
    (hosting,) = [r for r in run.of_type("kubernetes:core/v1:ConfigMap")
                  if r.inputs["metadata"]["name"] == "local-registry-hosting"]
    assert hosting.inputs["metadata"]["namespace"] == "kube-public"
    spec = yaml.safe_load(hosting.inputs["data"]["localRegistryHosting.v1"])
    assert spec["host"] == "localhost:5001"
    assert spec["hostFromContainerRuntime"] == f"{LOCAL_CONTAINER}:5000"
    assert re.match(r"localhost:5001/modelstack/digits:[0-9a-f]{12}-[0-9a-f]{8}@sha256:[0-9a-f]{64}$",
                    run.outputs["image"])


def test_kind_cluster_config_mirrors_the_local_registry():
    from tests.pulumi_harness import ROOT

    kind = yaml.safe_load((ROOT / "deploy" / "kind-cluster.yaml").read_text())
    assert kind["apiVersion"] == "kind.x-k8s.io/v1alpha4" and kind["kind"] == "Cluster"
    patches = "\n".join(kind["containerdConfigPatches"])
    assert 'config_path = "/etc/containerd/certs.d"' in patches
    hosts = (ROOT / "deploy" / "containerd-certs.d" / "localhost:5001" / "hosts.toml").read_text()
    assert f'[host."http://{LOCAL_CONTAINER}:5000"]' in hosts
    mounts = [m for node in kind["nodes"] for m in node.get("extraMounts", [])]
    assert {m["containerPath"] for m in mounts} == {"/etc/containerd/certs.d"}


def test_ecr_repository_is_immutable_scanned_and_pruned(program):
    run = program("prod")
    repos = {r.name: r.inputs for r in run.of_type("aws:ecr/repository:Repository")}
    repo = repos["registry-repository"]
    assert repo["name"] == stack_config("prod")["modelstack:registry"]["repository"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    policies = {r.name: json.loads(r.inputs["policy"]) for r in run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")}
    (rule,) = policies["registry-lifecycle"]["rules"]
    assert rule["selection"]["countType"] == "imageCountMoreThan" and rule["selection"]["countNumber"] == 30
    assert rule["action"] == {"type": "expire"}
    # BuildKit rewrites its cache tag each build: the cache lives in a mutable repository of its own.
    cache = repos["registry-cache-repository"]
    assert cache["imageTagMutability"] == "MUTABLE" and cache["name"] == repo["name"] + "-buildcache"
    (cache_rule,) = policies["registry-cache-lifecycle"]["rules"]
    assert cache_rule["selection"]["countType"] == "sinceImagePushed"
    image = run.one("docker-build:index:Image").inputs
    assert image["cacheTo"][0]["registry"]["ref"].startswith(f"{MOCK_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/"
                                                              f"{cache['name']}:buildcache-")
    assert image["cacheTo"][0]["registry"]["ref"] == image["cacheFrom"][0]["registry"]["ref"]
    assert run.outputs["image"].startswith("123456789012.dkr.ecr.us-west-2.amazonaws.com/modelstack/text-classifier:")
    aws = run.one("pulumi:providers:aws")
    assert aws.inputs["region"] == "us-west-2"
    assert all(r.provider.startswith(aws.urn + "::") for r in run.resources if r.type.startswith("aws:"))


def test_external_registry_uses_the_configured_url_and_secret_password(program):
    run = program("prod", config=_external("prod"),
                  secrets={"grafanaAdminPassword": GRAFANA_PASSWORD, "registryPassword": REGISTRY_PASSWORD})
    assert not run.of_type("aws:ecr/repository:Repository")
    assert re.match(r"registry.example.com/ml/modelstack/text-classifier:[0-9a-f-]+-gpu@sha256:", run.outputs["image"])
    assert run.outputs["registry"] == "registry.example.com"


@pytest.mark.parametrize("variant", ["prod", "external", "dev"])
def test_no_secret_in_plain_text_in_manifests_or_outputs(program, variant):
    secrets = {"grafanaAdminPassword": GRAFANA_PASSWORD, "registryPassword": REGISTRY_PASSWORD}
    config = _external("prod") if variant == "external" else None
    run = program("prod" if variant == "external" else variant, config=config, secrets=secrets)
    rendered = to_yaml(manifests(run))
    for secret in (ECR_TOKEN, REGISTRY_PASSWORD, GRAFANA_PASSWORD):
        assert secret not in rendered
        for res in run.resources:
            if secret in repr(res.inputs):
                assert res.secret_inputs, f"{res.type} {res.name} holds a secret in plain text"
        for key, value in run.outputs.items():
            if secret in repr(value):
                assert key in run.secret_outputs, f"output {key} exposes a secret"


def test_eks_managed_pool_has_gpu_nodes_with_taint_labels_and_role(program):
    run = program("prod")
    gpu = stack_config("prod")["modelstack:gpu"]
    group = run.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert group["clusterName"] == "ml-prod" and group["amiType"] == gpu["amiType"]
    assert group["instanceTypes"] == gpu["instanceTypes"]
    assert group["scalingConfig"] == {"minSize": gpu["minSize"], "desiredSize": gpu["desiredSize"],
                                      "maxSize": gpu["maxSize"]}
    assert group["subnetIds"] == ["subnet-0a", "subnet-0b"]
    role = run.one("aws:iam/role:Role")
    assert group["nodeRoleArn"].endswith(f":role/{role.name}")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = {r.inputs["policyArn"].rsplit("/", 1)[1]
                for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")}
    assert attached == set(NODE_POLICIES)
    node_group = run.one("aws:eks/nodeGroup:NodeGroup")
    attachments = {r.urn for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")}
    assert attachments <= set(node_group.dependencies)
    # Pods cannot reach the node role through IMDS: v2 only, one hop (the node's own).
    template = run.one("aws:ec2/launchTemplate:LaunchTemplate")
    assert template.inputs["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                                  "httpPutResponseHopLimit": 1}
    assert group["launchTemplate"]["id"].startswith(template.name)  # the mocks' id: NAME-id
    assert "imageId" not in template.inputs and "instanceType" not in template.inputs  # the group's own


@pytest.mark.parametrize("stack", ["prod", "karpenter"])
def test_device_plugin_runs_on_gpu_nodes_only(program, stack):
    run = program("prod", config=_karpenter() if stack == "karpenter" else None)
    (ds,) = [r.inputs for r in run.of_type("kubernetes:apps/v1:DaemonSet")
             if r.inputs["metadata"]["name"] == "nvidia-device-plugin"]
    pod = ds["spec"]["template"]["spec"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"modelstack.dev/accelerator": "nvidia"}
    assert "@sha256:" in pod["containers"][0]["image"]
    ns = next(r.inputs for r in run.of_type("kubernetes:core/v1:Namespace")
              if r.inputs["metadata"]["name"] == ds["metadata"]["namespace"])
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert ns["metadata"]["name"] != run.outputs["namespace"]


def test_karpenter_pool_is_limited_to_gpu_families_with_the_same_taint(program):
    run = program("prod", config=_karpenter())
    assert not run.of_type("aws:eks/nodeGroup:NodeGroup")
    (pool,) = [r.inputs for r in run.resources if r.type == "kubernetes:karpenter.sh/v1:NodePool"]
    (node_class,) = [r.inputs for r in run.resources if r.type == "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"]
    assert pool["apiVersion"] == "karpenter.sh/v1" and node_class["apiVersion"] == "karpenter.k8s.aws/v1"
    template = pool["spec"]["template"]
    assert template["spec"]["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                                "name": node_class["metadata"]["name"]}
    requirements = {r["key"]: r["values"] for r in template["spec"]["requirements"]}
    assert requirements["karpenter.k8s.aws/instance-family"] == ["g5", "g6"]
    assert template["spec"]["taints"] == [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]
    assert template["metadata"]["labels"] == {"modelstack.dev/accelerator": "nvidia"}
    assert node_class["spec"]["role"] == run.one("aws:iam/role:Role").name
    assert node_class["spec"]["amiSelectorTerms"] == [{"alias": "al2023@v20251103"}]  # pinned, not @latest
    assert node_class["spec"]["metadataOptions"]["httpPutResponseHopLimit"] == 1
    pod = next(r.inputs for r in run.of_type("kubernetes:apps/v1:Deployment"))["spec"]["template"]["spec"]
    assert pod["nodeSelector"].items() <= template["metadata"]["labels"].items()


def test_component_args_are_validated_up_front():
    from components.gpu_node_pool import GpuNodePoolArgs
    from components.registry import RegistryArgs

    with pytest.raises(ValueError, match="with a username needs its password"):
        RegistryArgs(type="external", repository="m/x", url="r.example.com", username="ci")
    with pytest.raises(ValueError, match="needs a url"):
        RegistryArgs(type="external", repository="m/x")
    with pytest.raises(ValueError, match="lower-case"):
        RegistryArgs(type="ecr", repository="Models/X")
    with pytest.raises(ValueError, match="subnet_ids"):
        GpuNodePoolArgs(pool="eks-managed", instance="s", cluster_name="c", instance_types=("g5.xlarge",),
                        min_size=0, desired_size=0, max_size=1)
    with pytest.raises(ValueError, match="min <= desired <= max"):
        GpuNodePoolArgs(pool="eks-managed", instance="s", cluster_name="c", instance_types=("g5.xlarge",),
                        min_size=2, desired_size=1, max_size=3, subnet_ids=["subnet-1"])


def test_runtime_class_only_where_the_gpu_runtime_is_not_the_default():
    import pulumi
    from pulumi.runtime.stack import wait_for_rpcs
    from pulumi.runtime.sync_await import _sync_await

    from components.gpu_node_pool import GpuNodePool, GpuNodePoolArgs

    created: list[tuple[str, dict]] = []

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            created.append((args.typ, args.inputs))
            return f"{args.name}-id", dict(args.inputs)

        def call(self, args):
            return {}, []

    pulumi.runtime.set_mocks(Mocks(), project="modelstack", stack="t", preview=False)
    pool = GpuNodePool("gpu", GpuNodePoolArgs(pool="karpenter", instance="modelstack-t", cluster_name="c",
                                              instance_types=("g5.xlarge",), ami_alias="al2023@v20251103",
                                              runtime_class_handler="nvidia"))
    _sync_await(wait_for_rpcs())
    (runtime_class,) = [i for t, i in created if t == "kubernetes:node.k8s.io/v1:RuntimeClass"]
    assert runtime_class["handler"] == "nvidia"
    assert pool.scheduling.runtime_class_name == runtime_class["metadata"]["name"]
    assert runtime_class["scheduling"]["tolerations"] == [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
