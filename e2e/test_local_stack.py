"""`pulumi preview`, `up` and `destroy` for real: the Pulumi CLI, its Python language host and the
kubernetes and docker-build plugins, against the local cluster's API server, registry and BuildKit.

The steps share one stack and run in order; each asserts what a user would check by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from e2e.engine import Stack, kube_json, kubectl, manifest_digest, registry_tags, run

pytestmark = pytest.mark.e2e

REPOSITORY = "modelstack/digits"
IMAGE = re.compile(r"^(?P<registry>[^/]+)/(?P<repo>[^:@]+):(?P<tag>[^@]+)@(?P<digest>sha256:[0-9a-f]{64})$")
# What the failing-gate step builds: 90% of the weights pruned away cannot keep 99% agreement.
FAILING_RECIPE = {"name": "prune90-int8", "prune": {"method": "global_unstructured", "amount": 0.9},
                  "quantize": {"mode": "dynamic_int8"}}


def namespace(stack: Stack) -> str:
    return f"modelstack-{stack.name}"


def expected_resources() -> set[tuple[str, str]]:
    """(type, name) of every resource the program registers for the local stack, from the mocked engine."""
    from tests.pulumi_harness import run_program

    run = run_program("local", secrets={"grafanaAdminPassword": "x"})
    return {(r.type, r.name) for r in run.resources}


def urns_in(output: str) -> set[tuple[str, str]]:
    """(type, name) of each `[urn=...]` in `pulumi preview --diff` output."""
    found = set()
    for urn in re.findall(r"\[urn=(urn:pulumi:[^\]]+)\]", output):
        type_chain, name = urn.split("::")[2:4]
        found.add((type_chain.split("$")[-1], name))
    return found


def deployment(stack: Stack, name: str = "digits") -> dict[str, Any]:
    return kube_json(stack.env, "get", "deployment", name, "-n", namespace(stack))


def assert_rolled_out(stack: Stack, image: str) -> None:
    dep = deployment(stack)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
    status = dep["status"]
    assert status.get("observedGeneration") == dep["metadata"]["generation"]
    assert status.get("updatedReplicas") == status.get("availableReplicas") == dep["spec"]["replicas"]


def report(stack: Stack, digest: str) -> dict[str, Any]:
    store = Path(json.loads(stack.pulumi("config", "get", "artifacts").output)["store"])
    return json.loads((store / digest / "report.json").read_text())


def test_1_preview_of_a_new_stack_names_every_resource(stack: Stack) -> None:
    result = stack.pulumi("preview", "--diff", timing="1 preview --diff (new stack)")
    assert "to create" in result.output
    missing = expected_resources() - urns_in(result.output)
    assert not missing, f"preview does not name {sorted(missing)}"


def test_2_up_builds_pushes_and_deploys_by_digest(stack: Stack) -> None:
    stack.pulumi("up", "--yes", timing="2 up (new stack)", timeout=1800)
    out = stack.outputs()
    image = IMAGE.match(out["image"])
    assert image, f"image output {out['image']!r} is not REGISTRY/REPO:TAG@sha256:DIGEST"
    assert image["repo"] == REPOSITORY and image["registry"] == stack.env["MODELSTACK_REGISTRY"]
    # The registry serves that very manifest, under the digest and under the tag.
    assert manifest_digest(image["registry"], REPOSITORY, image["digest"]) == image["digest"]
    assert manifest_digest(image["registry"], REPOSITORY, image["tag"]) == image["digest"]
    assert image["tag"].startswith(out["modelDigest"][:12])  # the tag carries the model digest
    assert_rolled_out(stack, out["image"])

    # The optimize build ran inside the engine and published to the stack's (fresh) store; the stack's
    # outputs are that artifact's figures.
    rep = report(stack, out["modelDigest"])
    assert rep["digest"] == out["modelDigest"]
    assert out["sizeRatio"] == pytest.approx(rep["size_bytes"]["optimized"] / rep["size_bytes"]["source"], abs=1e-3)
    assert out["accuracyDelta"] == pytest.approx(rep["accuracy"]["delta"], abs=1e-3)
    assert out["agreement"] == pytest.approx(rep["accuracy"]["agreement"], abs=1e-3)
    assert out["latencyP99Ms"] == pytest.approx(rep["latency_ms"]["optimized"]["b1"]["p99"], abs=1e-2)

    # Every Kubernetes object of the stack exists in the API server.
    state = json.loads(stack.export())
    objects = [r for r in state["deployment"]["resources"] if r["type"].startswith("kubernetes:")
               and not r["type"].startswith("pulumi:providers")]
    assert len(objects) >= 15
    for obj in objects:
        kind, meta = obj["outputs"]["kind"], obj["outputs"]["metadata"]
        args = ["get", kind, meta["name"], "-o", "name"] + (["-n", meta["namespace"]] if meta.get("namespace") else [])
        assert kubectl(stack.env, *args, check=False).returncode == 0, f"{kind} {meta['name']} is not in the cluster"


def test_3_nothing_changed_means_nothing_happens(stack: Stack) -> None:
    preview = stack.pulumi("preview", "--expect-no-changes", timing="3 preview --expect-no-changes")
    assert re.search(r"\d+ unchanged", preview.output)
    before = deployment(stack)["metadata"]["generation"]
    up = stack.pulumi("up", "--yes", "--expect-no-changes", timing="3 up (no changes)")
    assert not re.search(r"^\s*[~+-]\s+\d+ to (update|create|delete)", up.output, re.M)
    assert deployment(stack)["metadata"]["generation"] == before


def test_4_a_recipe_change_shows_why_and_rolls_the_deployment(stack: Stack) -> None:
    old = stack.outputs()
    stack.pulumi("config", "set", "recipe", "int8-static")
    preview = stack.pulumi("preview", "--diff", timing="4 preview --diff (recipe change)")
    assert "OptimizedModel digits: rebuild because recipe.quantize.mode: dynamic_int8 -> static_int8" in preview.output
    changed = set(re.findall(r"^\s*(?:~|\+-)\s*(\S+): \((?:update|replace)\)", preview.output, re.M))
    assert {"pulumi-python:dynamic:Resource", "docker-build:index:Image", "kubernetes:apps/v1:Deployment"} <= changed

    stack.pulumi("up", "--yes", timing="4 up (recipe change)", timeout=1800)
    new = stack.outputs()
    assert new["modelDigest"] != old["modelDigest"] and new["image"] != old["image"]
    assert new["recipe"] == "int8-static"
    assert_rolled_out(stack, new["image"])


def test_5_a_failed_gate_fails_the_update_before_any_image(stack: Stack, tmp_path: Path) -> None:
    before = stack.outputs()
    tags = registry_tags(stack.env["MODELSTACK_REGISTRY"], REPOSITORY)
    recipe = tmp_path / "prune90.yaml"
    recipe.write_text(json.dumps(FAILING_RECIPE))
    stack.pulumi("config", "set", "recipe", str(recipe))
    try:
        up = stack.pulumi("up", "--yes", check=False, timing="5 up (failing gate)", timeout=1800)
    finally:
        stack.pulumi("config", "set", "recipe", "int8-static")
    assert up.returncode != 0
    reasons = [line.strip() for line in up.output.splitlines() if "accuracy gate failed" in line]
    assert reasons, up.output[-3000:]
    assert "Traceback" not in up.output, up.output[max(0, up.output.find("Traceback") - 1500):][:5000]
    assert registry_tags(stack.env["MODELSTACK_REGISTRY"], REPOSITORY) == tags  # no image was pushed
    assert deployment(stack)["spec"]["template"]["spec"]["containers"][0]["image"] == before["image"]
    assert stack.outputs()["image"] == before["image"]


PRIVILEGED_POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged-probe"},
    "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
}


def test_6_the_api_server_refuses_a_privileged_pod_in_the_namespace(stack: Stack, tmp_path: Path) -> None:
    ns = kube_json(stack.env, "get", "namespace", namespace(stack))
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(PRIVILEGED_POD))
    result = kubectl(stack.env, "apply", "-n", namespace(stack), "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.output and "privileged" in result.output
    # The same pod is accepted where nothing is enforced: it is the namespace's policy that refused it.
    accepted = kubectl(stack.env, "apply", "-n", "default", "-f", str(manifest), "--dry-run=server", check=False)
    assert accepted.returncode == 0, accepted.output


def test_7_the_state_holds_the_grafana_password_only_as_ciphertext(stack: Stack) -> None:
    password = stack.pulumi("config", "get", "grafanaAdminPassword").output.strip()
    assert len(password) >= 16
    exported = stack.export()
    assert password not in exported
    assert '"ciphertext"' in exported


def test_8_destroy_leaves_nothing_then_the_stack_is_removed(stack: Stack) -> None:
    stack.pulumi("destroy", "--yes", timing="8 destroy", timeout=900)
    ns = kubectl(stack.env, "get", "namespace", namespace(stack), check=False)
    assert ns.returncode != 0 and "NotFound" in ns.output
    left = kubectl(stack.env, "get", "all,configmap,secret,serviceaccount,networkpolicy,role,rolebinding",
                   "-A", "-l", f"app.kubernetes.io/instance={namespace(stack)}", "-o", "name")
    assert left.output.strip() in ("", "No resources found"), left.output
    stack.pulumi("stack", "rm", "--yes")
    listed = run(["pulumi", "stack", "ls", "--non-interactive"], stack.env).check().output
    assert stack.name not in listed.split()

