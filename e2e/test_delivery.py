"""Delivery under the real engine: build once and promote by digest, the policy pack guarding every
`up`, and the CI scripts the workflows call (scripts/ci/), against the local cluster.

Two stacks in one backend: `e2e-build` builds the model and image (the way dev does on merge), and
`e2e-promote` takes them by digest (the way prod does). The steps run in order.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.release import PINNED_IMAGE
from e2e.conftest import TIMINGS
from e2e.engine import REPO, Result, Stack, kube_json, kubectl, manifest_digest, registry_tags, run
from scripts import wheelhouse
from tests.processes import start_docker_registry, stop

pytestmark = pytest.mark.e2e

BUILD, PROMOTE, COPY, PR = "e2e-build", "e2e-promote", "e2e-copy", 4242
ORG_PROJECT = "organization/modelstack"
REPOSITORY = "modelstack/digits"
POLICY = ["--policy-pack", "policy/analyzer"]
# The source builds a lossy recipe that passes its own gate (agreement ~0.996 on digits: 60% pruned;
# prune50-int8 keeps every row, or all but one, which is too close to call); the promoting stack's
# stricter gate must refuse those figures.
SOURCE_RECIPE = {"name": "prune60-int8", "prune": {"method": "global_unstructured", "amount": 0.6},
                 "quantize": {"mode": "dynamic_int8", "reduce_range": False}}
STRICT_RECIPE = {"name": "prod-gate", "gate": {"min_agreement": 0.9999, "max_accuracy_drop": 0.0001}}


class Delivery:
    """The two stacks, their config files in the project, and the CI scripts run as a workflow would."""

    def __init__(self, env: dict[str, str], work: Path):
        # A passphrase per stack, as the workflows hold them (docs/delivery.md): the building stack's is
        # dev's, the promoting stacks' is prod's.
        self.env, self.work = env, work
        self.prod_env = {**env, "PULUMI_CONFIG_PASSPHRASE": os.urandom(18).hex()}
        self.build = Stack(BUILD, env, TIMINGS)
        self.promote = Stack(PROMOTE, self.prod_env, TIMINGS)
        self.copy = Stack(COPY, self.prod_env, TIMINGS)

    def script(self, name: str, *args: str, timing: str | None = None, env: dict[str, str] | None = None,
               **extra: str) -> Result:
        result = run([str(REPO / "scripts" / "ci" / name), *args], {**(env or self.env), **extra}, timeout=1800)
        if timing:
            TIMINGS[timing] = round(result.seconds, 1)
        return result

    def store(self, stack: str) -> Path:
        return self.work / f"artifacts-{stack}"


def write_stack_file(stack: str, config: dict[str, Any]) -> Path:
    path = REPO / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def delivery(cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivery]:
    work = tmp_path_factory.mktemp("delivery")
    (work / "state").mkdir()
    base = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"]
    wheelhouse.require(REPO / base["modelstack:image"]["wheelhouse"])
    env = {**cluster, "PULUMI_BACKEND_URL": f"file://{work / 'state'}",
           "PULUMI_CONFIG_PASSPHRASE": os.urandom(18).hex(), "MODELSTACK_CI_OUT": str(work / "ci")}
    d = Delivery(env, work)

    source = work / "lossy.yaml"
    source.write_text(yaml.safe_dump(SOURCE_RECIPE))
    build = {**base, "modelstack:recipe": str(source),
             "modelstack:artifacts": {"store": str(d.store(BUILD))},
             "modelstack:serving": {**base["modelstack:serving"], "replicas": 1}}  # the advisory
    strict = work / "strict-gate.yaml"
    strict.write_text(yaml.safe_dump(STRICT_RECIPE))
    promote = {k: v for k, v in base.items() if k not in ("modelstack:model", "modelstack:image")}
    promote.update({"modelstack:promote": {"from": f"{ORG_PROJECT}/{BUILD}"}, "modelstack:recipe": str(strict),
                    "modelstack:artifacts": {"store": str(d.store(PROMOTE))}})
    files = [write_stack_file(BUILD, build), write_stack_file(PROMOTE, promote)]
    for stack in (d.build, d.promote):
        stack.pulumi("stack", "init", "--secrets-provider", "passphrase")
        stack.pulumi("config", "set", "--secret", "grafanaAdminPassword", stdin=os.urandom(12).hex())
    try:
        yield d
    finally:
        d.script("pr-stack.sh", "destroy", str(PR), MODELSTACK_BASE_STACK=BUILD)
        for stack in (d.copy, d.promote, d.build):  # the promoting stacks first: they read the other
            stack.pulumi("destroy", "--yes", check=False, timeout=600)
            stack.pulumi("stack", "rm", "--yes", "--force", check=False)
        for path in [*files, REPO / f"Pulumi.{COPY}.yaml", REPO / f"Pulumi.pr-{PR}.yaml"]:
            path.unlink(missing_ok=True)


def namespace_exists(env: dict[str, str], stack: str) -> bool:
    return kubectl(env, "get", "namespace", f"modelstack-{stack}", check=False).returncode == 0


def serving_image(env: dict[str, str], stack: str) -> str:
    dep = kube_json(env, "get", "rollout", "digits", "-n", f"modelstack-{stack}")  # Pulumi.local.yaml: a canary
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def test_1_the_building_stack_deploys_and_the_pack_reports_an_advisory(delivery: Delivery) -> None:
    result = delivery.script("deploy.sh", BUILD, timing="1 deploy.sh e2e-build (builds)").check()
    (delivery.work / "build-up.txt").write_text(result.output)
    assert "serving-replicas-for-availability" in result.output and "advisory" in result.output.lower()
    out = delivery.build.outputs()
    assert re.match(rf"^{re.escape(delivery.env['MODELSTACK_REGISTRY'])}/{REPOSITORY}:\S+@sha256:[0-9a-f]{{64}}$",
                    out["image"])
    assert serving_image(delivery.env, BUILD) == out["image"]
    assert out["recipe"] == SOURCE_RECIPE["name"] and 0.99 <= out["agreement"] < 0.9999


def test_2a_promoting_from_a_stack_that_does_not_exist_is_one_config_error(delivery: Delivery) -> None:
    missing = f"{ORG_PROJECT}/no-such-stack"
    delivery.promote.pulumi("config", "set", "--path", "promote.from", missing)
    try:
        result = delivery.promote.pulumi("preview", *POLICY, check=False, timing="2 preview, missing source")
    finally:
        delivery.promote.pulumi("config", "set", "--path", "promote.from", f"{ORG_PROJECT}/{BUILD}")
    assert result.returncode != 0
    lines = [line for line in result.output.splitlines() if f"cannot read stack '{missing}'" in line]
    assert lines and "modelstack:promote.from" in lines[0], result.output[-3000:]
    assert "Traceback" not in result.output


def test_2b_a_promotion_below_this_stacks_gate_is_blocked_by_the_policy_pack(delivery: Delivery) -> None:
    result = delivery.promote.pulumi("up", "--yes", *POLICY, check=False, timing="2 up e2e-promote (blocked)")
    assert result.returncode != 0
    lines = [line for line in result.output.splitlines() if "model-meets-gate" in line or "min_agreement" in line]
    assert lines, result.output[-4000:]
    assert "mandatory" in result.output.lower()
    assert "Traceback" not in result.output
    assert not namespace_exists(delivery.env, PROMOTE)  # blocked at preview: nothing was created
    (delivery.work / "blocked-up.txt").write_text(result.output)


def test_3_the_promotion_deploys_the_tested_digest_and_builds_nothing(delivery: Delivery) -> None:
    source = delivery.build.outputs()
    delivery.promote.pulumi("config", "set", "recipe", "int8-dynamic")  # the default gate: 0.99 agreement
    tags = registry_tags(delivery.env["MODELSTACK_REGISTRY"], REPOSITORY)

    preview = delivery.promote.pulumi("preview", "--diff", *POLICY, timing="3 preview --diff e2e-promote")
    digest = source["image"].rsplit("@", 1)[1]
    summary = f"promoted from {BUILD}: model {source['modelDigest'][:12]}…, image {digest[:19]}…"
    assert summary in preview.output, preview.output[-3000:]
    (delivery.work / "promote-preview.txt").write_text(preview.output)  # docs/delivery.md shows one

    # Under prod's passphrase: the building stack's outputs (no secret among them) read all the same.
    delivery.script("deploy.sh", PROMOTE, timing="3 deploy.sh e2e-promote (promotes)", env=delivery.prod_env).check()
    out = delivery.promote.outputs()
    assert out["image"] == source["image"] and out["modelDigest"] == source["modelDigest"]
    assert out["promotedFrom"] == f"{ORG_PROJECT}/{BUILD}"
    assert serving_image(delivery.env, PROMOTE) == source["image"]  # B's pods run A's image digest
    # No build ran for B: no image build or model build in its state, no new tag in the registry.
    state = json.loads(delivery.promote.export())["deployment"]["resources"]
    assert not [r for r in state if r["type"] == "docker-build:index:Image"]
    models = [r for r in state if r["type"] == "pulumi-python:dynamic:Resource"  # not the canary's RolloutStatus
              and not r["urn"].endswith("::serving-rollout-status")]
    assert models and all("promotedFrom" in r["inputs"] for r in models)
    assert registry_tags(delivery.env["MODELSTACK_REGISTRY"], REPOSITORY) == tags
    # The tested artifact is in B's own store, byte for byte the digest.
    assert out["modelArtifact"] == str(delivery.store(PROMOTE) / source["modelDigest"])
    assert (delivery.store(PROMOTE) / source["modelDigest"] / "manifest.json").is_file()

    again = delivery.promote.pulumi("preview", "--expect-no-changes", *POLICY)
    assert again.returncode == 0


def test_4_a_promotion_into_another_registry_copies_the_image_under_the_same_digest(delivery: Delivery) -> None:
    source = delivery.build.outputs()
    digest = source["image"].rsplit("@", 1)[1]
    registry, host = start_docker_registry(delivery.work / "registry-b")
    copy = delivery.copy
    try:
        config = yaml.safe_load((REPO / f"Pulumi.{PROMOTE}.yaml").read_text())["config"]
        config.update({"modelstack:registry": {"type": "external", "url": host},
                       "modelstack:artifacts": {"store": str(delivery.store(COPY))},
                       "modelstack:recipe": "int8-dynamic"})
        write_stack_file(COPY, config)
        copy.pulumi("stack", "init", "--secrets-provider", "passphrase")
        copy.pulumi("config", "set", "--secret", "grafanaAdminPassword", stdin=os.urandom(12).hex())
        copy.pulumi("up", "--yes", *POLICY, timing="4 up e2e-copy (promotes into another registry)")
        out = copy.outputs()
        tag = PINNED_IMAGE.match(source["image"])["tag"]  # type: ignore[index]
        assert out["image"] == f"{host}/{REPOSITORY}:{tag}@{digest}"
        assert manifest_digest(host, REPOSITORY, digest) == digest  # the same manifest bytes
        assert serving_image(delivery.env, COPY) == out["image"]
        copy.pulumi("destroy", "--yes", timing="4 destroy e2e-copy")
    finally:
        stop(registry)


def test_5_each_stacks_preview_is_one_comment_and_devs_passphrase_cannot_preview_prod(delivery: Delivery) -> None:
    from tests.ci.fakes import FakeGitHub

    out = Path(delivery.env["MODELSTACK_CI_OUT"])
    # The preview jobs: each stack under its own passphrase, as preview-dev and preview-prod run.
    dev = delivery.script("preview.sh", BUILD, timing="5 preview.sh e2e-build", MODELSTACK_CI_OUT=str(out / "dev"))
    prod = delivery.script("preview.sh", PROMOTE, timing="5 preview.sh e2e-promote", env=delivery.prod_env,
                           MODELSTACK_CI_OUT=str(out / "prod"))  # fmt: skip
    assert dev.returncode == 0, dev.output[-4000:]
    assert prod.returncode == 0, prod.output[-4000:]
    bodies = [out / "dev" / "preview.md", out / "prod" / "preview.md"]
    assert bodies[0].read_text().splitlines()[0] == f"<!-- modelstack:preview:{BUILD} -->"
    assert bodies[1].read_text().splitlines()[0] == f"<!-- modelstack:preview:{PROMOTE} -->"
    assert "promoted from" in bodies[1].read_text()
    # What a pull request's job without prod's environment holds cannot decrypt prod's stack.
    leak = delivery.script("preview.sh", PROMOTE, MODELSTACK_CI_OUT=str(out / "leak"))
    assert leak.returncode != 0 and "incorrect passphrase" in leak.output.lower(), leak.output[-3000:]
    with FakeGitHub(number=PR) as github:  # the GitHub API on loopback, recording what it is sent
        for body in (*bodies, *bodies):
            delivery.script("comment.sh", str(body), **github.env()).check()
    assert sorted(c.body.strip() for c in github.comments) == sorted(b.read_text().strip() for b in bodies)
    assert [method for method, _, _ in github.requests if method != "GET"] == ["POST", "POST", "PATCH", "PATCH"]


def test_6_a_pull_request_stack_comes_up_passes_its_smoke_test_and_goes(delivery: Delivery) -> None:
    # The smoke test reaches the PR stack's own pods, through `kubectl port-forward` to its Service.
    up = delivery.script("pr-stack.sh", "up", str(PR), timing="6 pr-stack.sh up (with smoke)",
                         MODELSTACK_BASE_STACK=BUILD)
    assert up.returncode == 0, up.output[-4000:]
    assert f"smoke: pr-{PR} ok:" in up.output, up.output[-2000:]
    assert namespace_exists(delivery.env, f"pr-{PR}")
    down = delivery.script("pr-stack.sh", "destroy", str(PR), timing="6 pr-stack.sh destroy",
                           MODELSTACK_BASE_STACK=BUILD)
    assert down.returncode == 0, down.output[-4000:]
    assert not namespace_exists(delivery.env, f"pr-{PR}")
    listed = run(["pulumi", "stack", "ls", "--non-interactive"], delivery.env).check().output
    assert f"pr-{PR}" not in listed.split()
