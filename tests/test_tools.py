"""tools/build.sh builds what the Python SDK pins ask for: plugin versions equal to the SDK packages',
a CLI not older than the SDK, wrapper modules that require exactly the versions the script names."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def script_versions() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+_(?:VERSION|MODULE))=(\S+)$", (TOOLS / "build.sh").read_text(), re.M))


def pins() -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9-]+)==(\S+)$", (REPO / "requirements.in").read_text(), re.M))


def required(module_dir: str, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", (TOOLS / "modules" / module_dir / "go.mod")
                      .read_text(), re.M)
    assert match, f"tools/modules/{module_dir}/go.mod does not require {module}"
    return match.group(1)


def test_plugins_are_the_versions_the_python_sdks_ask_for() -> None:
    v, p = script_versions(), pins()
    assert v["KUBERNETES_PROVIDER_VERSION"] == p["pulumi-kubernetes"]
    assert v["DOCKER_BUILD_PROVIDER_VERSION"] == p["pulumi-docker-build"]
    assert required("docker-build", "github.com/pulumi/pulumi-docker-build") == f"v{p['pulumi-docker-build']}"


def test_the_cli_is_not_older_than_the_sdk_and_the_wrappers_match_the_script() -> None:
    v = script_versions()
    assert Version(v["PULUMI_VERSION"]) >= Version(pins()["pulumi"])
    assert required("pulumi", "github.com/pulumi/pulumi/pkg/v3") == f"v{v['PULUMI_VERSION']}"
    assert required("pulumi-language-python", "github.com/pulumi/pulumi/sdk/v3") == f"v{v['LANGUAGE_HOST_SDK_VERSION']}"
    assert required("kubernetes", "k8s.io/kubernetes") == f"v{v['KUBERNETES_VERSION']}"
    assert required("etcd", "go.etcd.io/etcd/server/v3") == f"v{v['ETCD_VERSION']}"
    assert required("containerd", "github.com/containerd/containerd/v2") == f"v{v['CONTAINERD_VERSION']}"
    assert required("runc", "github.com/opencontainers/runc") == f"v{v['RUNC_VERSION']}"
    assert required("coredns", "github.com/coredns/coredns") == f"v{v['COREDNS_VERSION']}"
    assert required("prometheus", "github.com/prometheus/prometheus") == v["PROMETHEUS_MODULE"]
    assert required("metrics-server", "sigs.k8s.io/metrics-server") == f"v{v['METRICS_SERVER_VERSION']}"
    assert required("argo-rollouts", "github.com/argoproj/argo-rollouts") == f"v{v['ARGO_ROLLOUTS_VERSION']}"
    assert required("keda", "github.com/kedacore/keda/v2") == f"v{v['KEDA_VERSION']}"
    assert required("kube-router", "github.com/cloudnativelabs/kube-router/v2") == f"v{v['KUBE_ROUTER_VERSION']}"
    cluster = (REPO / "local-cluster" / "cluster.sh").read_text()
    assert f"/modelstack-system/argo-rollouts:{v['ARGO_ROLLOUTS_VERSION']}\n" in cluster
    major, minor, patch = v["PROMETHEUS_VERSION"].split(".")  # module v0.MMmm.p is Prometheus MM.mm.p
    assert v["PROMETHEUS_MODULE"] == f"v0.{int(major) * 100 + int(minor)}.{patch}"
    assert required("buildkit", "github.com/moby/buildkit") == f"v{v['BUILDKIT_VERSION']}"
    assert required("buildkit", "github.com/docker/buildx") == f"v{v['BUILDX_VERSION']}"


def test_the_local_stack_names_the_prometheus_image_the_cluster_pushes() -> None:
    cluster = (REPO / "local-cluster" / "cluster.sh").read_text()
    pushed = re.search(r"^prometheus_image=\$registry/(\S+)", cluster, re.M)
    assert pushed and pushed.group(1) == f"modelstack-system/prometheus:{script_versions()['PROMETHEUS_VERSION']}"
    local = (REPO / "Pulumi.local.yaml").read_text()
    assert f"prometheusImage: 127.0.0.1:35000/{pushed.group(1)}\n" in local


def test_the_local_stack_names_the_api_server_endpoint_the_cluster_serves() -> None:
    cluster = (REPO / "local-cluster" / "cluster.sh").read_text()
    subnet = re.search(r"^pod_subnet=\$\{MODELSTACK_POD_SUBNET:-([0-9.]+)\}", cluster, re.M)
    port = re.search(r"^apiserver_port=\$\{MODELSTACK_APISERVER_PORT:-([0-9]+)\}", cluster, re.M)
    assert subnet and port and re.search(r"node_ip=\$pod_subnet\.1\b", cluster)
    local = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"]
    assert local["modelstack:cluster"]["apiServer"] == [f"{subnet.group(1)}.1:{port.group(1)}"]


def test_buildkit_is_the_release_line_of_the_client_docker_build_embeds() -> None:
    client = required("docker-build", "github.com/moby/buildkit")
    server = f"v{script_versions()['BUILDKIT_VERSION']}"
    assert Version(client).release[:2] == Version(server).release[:2]
    assert required("docker-build", "github.com/docker/buildx") == f"v{script_versions()['BUILDX_VERSION']}"


def test_every_wrapper_module_pins_its_checksums() -> None:
    for module in (TOOLS / "modules").iterdir():
        assert (module / "go.sum").is_file(), f"{module.name} has no go.sum"
        assert re.search(r"^tool", (module / "go.mod").read_text(), re.M), f"{module.name} names no tool"
