"""A promoting stack under mocks: it builds nothing, deploys the source's image digest, and a bad source
fails at config time with one line naming the stack and the output."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
import pytest

from components.release import READ_STACK_OUTPUTS, gate_failures, parse_release
from tests import pulumi_harness
from tests.pulumi_harness import stack_config

SOURCE = "organization/modelstack/local"
DIGEST = "ab" * 32
IMAGE = f"127.0.0.1:35000/modelstack/digits:{DIGEST[:12]}-0123abcd@sha256:{'cd' * 32}"
SOURCE_OUTPUTS: dict[str, Any] = {
    "modelName": "digits", "modelDigest": DIGEST, "modelArtifact": f"/state/artifacts/{DIGEST}", "image": IMAGE,
    "gate": {"max_accuracy_drop": 0.01, "min_agreement": 0.99}, "sizeRatio": 0.27, "agreement": 0.997,
    "accuracyDelta": -0.002, "latencyP50Ms": 0.05, "latencyP99Ms": 0.09, "recipe": "int8-dynamic",
}
BUILD_TYPES = {"docker-build:index:Image"}


def promoting(base: str = "local", registry: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(stack_config(base))
    cfg.pop("modelstack:model")
    cfg.pop("modelstack:image", None)
    cfg["modelstack:promote"] = {"from": SOURCE}
    if registry is not None:
        cfg["modelstack:registry"] = registry
    return cfg


@pytest.fixture
def source(monkeypatch):
    """The source stack's outputs, as the engine's readStackOutputs invoke answers."""
    outputs = dict(SOURCE_OUTPUTS)
    monkeypatch.setitem(pulumi_harness.MOCK_INVOKES, READ_STACK_OUTPUTS, {"name": SOURCE, "outputs": outputs})
    return outputs


def dynamic(run: pulumi_harness.ProgramRun) -> dict[str, Any]:
    return {r.name: r.inputs for r in run.of_type("pulumi-python:dynamic:Resource")}


def test_a_promoting_stack_deploys_the_tested_digest_and_builds_nothing(program, source):
    run = program("local", config=promoting())
    assert run.error is None, run.error
    assert not [r for r in run.resources if r.type in BUILD_TYPES]
    models = dynamic(run)
    assert set(models) == {"promotion-model"}  # no OptimizedModel, no image copy (same registry)
    promoted = models["promotion-model"]
    assert promoted["digest"] == DIGEST and promoted["promotedFrom"] == SOURCE
    assert promoted["figures"]["agreement"] == 0.997 and promoted["gate"]["min_agreement"] == 0.99
    (ref,) = run.of_type("pulumi:pulumi:StackReference")
    assert ref.inputs["name"] == SOURCE
    (deployment,) = [r for r in run.of_type("kubernetes:apps/v1:Deployment") if r.name == "serving-deployment"]
    (container,) = deployment.inputs["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert run.outputs["image"] == IMAGE and run.outputs["modelDigest"] == DIGEST
    assert run.outputs["promotedFrom"] == SOURCE and run.outputs["agreement"] == 0.997


def test_another_registry_gets_a_copy_by_digest(program, source):
    run = program("local", config=promoting(registry={"type": "external", "url": "registry.example.com:5000"}))
    assert run.error is None, run.error
    copy_props = dynamic(run)["promotion-image"]
    assert copy_props["sourceRepository"] == "127.0.0.1:35000/modelstack/digits"
    assert copy_props["digest"] == f"sha256:{'cd' * 32}"
    assert copy_props["repository"] == "registry.example.com:5000/modelstack/digits"
    assert copy_props["tag"] == f"{DIGEST[:12]}-0123abcd"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda o: o.pop("image"), ["Pulumi.local.yaml", "modelstack:promote.from", SOURCE, "no output 'image'"]),
    (lambda o: o.update(image="127.0.0.1:35000/modelstack/digits:latest"), ["'image' is not pinned by digest"]),
    (lambda o: o.update(agreement=0.95), [SOURCE, "failed its gate", "agreement 0.9500 < min_agreement 0.99"]),
    (lambda o: o.clear(), [SOURCE, "has no outputs"]),
])
def test_a_bad_source_fails_at_config_time_naming_stack_and_output(program, source, change, expected):
    change(source)
    run = program("local", config=promoting(), raise_errors=False)
    assert isinstance(run.error, pulumi.RunError), run.error
    for text in expected:
        assert text in str(run.error), f"{text!r} not in {run.error}"
    assert run.resources == []


def test_a_promoting_stack_may_not_also_name_a_model(program, source):
    cfg = promoting()
    cfg["modelstack:model"] = copy.deepcopy(stack_config("local"))["modelstack:model"]
    run = program("local", config=cfg, raise_errors=False)
    assert "modelstack:model: a promoting stack builds no model" in str(run.error)
    assert run.resources == []


def test_promote_from_must_be_a_fully_qualified_stack(program, source):
    cfg = promoting()
    cfg["modelstack:promote"] = {"from": "dev"}
    run = program("local", config=cfg, raise_errors=False)
    assert "modelstack:promote.from" in str(run.error) and "ORG/PROJECT/STACK" in str(run.error)


def test_a_building_stack_exports_what_a_promotion_reads(program):
    run = program("local")
    missing = {"modelName", "modelDigest", "modelArtifact", "image", "gate", "sizeRatio", "agreement",
               "accuracyDelta", "latencyP50Ms", "latencyP99Ms"} - set(run.outputs)
    assert not missing
    assert run.outputs["gate"] == {"max_accuracy_drop": 0.01, "min_agreement": 0.99}


def test_gate_failures_judge_like_the_build():
    gate = {"min_agreement": 0.99, "max_accuracy_drop": 0.01}
    assert gate_failures({"agreement": 0.99, "accuracyDelta": -0.01}, gate) == []
    assert gate_failures({"agreement": 0.99, "accuracyDelta": None}, gate) == []
    assert gate_failures({"agreement": 0.989, "accuracyDelta": -0.02}, gate) == [
        "agreement 0.9890 < min_agreement 0.99", "top-1 drop 0.0200 > max_accuracy_drop 0.01"]
    release = parse_release(SOURCE, SOURCE_OUTPUTS)
    assert release.summary == f"promoted from local: model {DIGEST[:12]}…, image sha256:cdcdcdcdcdcd…"
