"""A promoting stack under mocks: it builds nothing, deploys the source's image digest, and a bad source
fails at config time with one line naming the stack and the output."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
import pytest

from components.release import READ_STACK_OUTPUTS, gate_failures, parse_release
from optimize.recipe import GateSpec
from tests import pulumi_harness
from tests.pulumi_harness import stack_config

SOURCE = "organization/modelstack/local"
DIGEST = "ab" * 32
IMAGE = f"127.0.0.1:35000/modelstack/digits:{DIGEST[:12]}-0123abcd@sha256:{'cd' * 32}"
# A source built before builds were task-aware: no task, no cosine or relative error.
SOURCE_OUTPUTS: dict[str, Any] = {
    "modelName": "digits", "modelDigest": DIGEST, "modelArtifact": f"/state/artifacts/{DIGEST}", "image": IMAGE,
    "gate": {"max_accuracy_drop": 0.01, "min_agreement": 0.99}, "sizeRatio": 0.27, "agreement": 0.997,
    "accuracyDelta": -0.002, "latencyP50Ms": 0.05, "latencyP99Ms": 0.09, "recipe": "int8-dynamic",
}
# A sentence embedder built since: argmax agreement means nothing for it, the cosine is what its gate judged.
EMBEDDING_OUTPUTS: dict[str, Any] = {
    **SOURCE_OUTPUTS, "gate": {**GateSpec().model_dump(), "task": "auto"}, "task": "embedding",
    "agreement": 0.7, "accuracyDelta": None, "cosineMean": 0.999, "cosineMin": 0.99, "relativeError": 0.04,
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
    """The model's dynamic resources (the build, the promotion, the image copy); not RolloutStatus."""
    return {r.name: r.inputs for r in run.of_type("pulumi-python:dynamic:Resource") if "rollout" not in r.name}


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
    deployment = run.serving_workload()
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
    (lambda o: o.update(agreement=0.95), [SOURCE, "failed its gate (classification model: agreement 0.9500 < "
                                          "min_agreement 0.99)"]),
    (lambda o: o.clear(), [SOURCE, "has no outputs"]),
    (lambda o: o.update(EMBEDDING_OUTPUTS, cosineMean=0.97),
     [SOURCE, "failed its gate (embedding model: cosineMean 0.9700 < min_cosine 0.99)"]),
    (lambda o: o.update(EMBEDDING_OUTPUTS, cosineMean=None), ["no measured cosineMean (None)"]),
    (lambda o: o.update(task="ranking"), [SOURCE, "output 'task' is not one of classification, sequence"]),
    (lambda o: o.update(gate={**o["gate"], "min_cosine": "high"}), ["'gate' has a threshold that is not a number"]),
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
               "accuracyDelta", "latencyP50Ms", "latencyP99Ms", "task", "cosineMean", "cosineMin",
               "relativeError"} - set(run.outputs)
    assert not missing
    # Every threshold, and the task it states (auto); the engine drops a null output (no recipe metric).
    assert run.outputs["gate"] == {k: v for k, v in GateSpec().model_dump().items() if v is not None}
    assert run.outputs["task"] == "classification"  # what the build judged the model as (mocked)
    assert parse_release(SOURCE, run.outputs).task == "classification"


def test_an_embedding_model_promotes_on_its_cosine_and_passes_its_task_on(program, source):
    source.update(EMBEDDING_OUTPUTS)
    run = program("local", config=promoting())
    assert run.error is None, run.error
    promoted = dynamic(run)["promotion-model"]
    assert promoted["figures"]["task"] == "embedding" and promoted["figures"]["cosineMean"] == 0.999
    # Re-exported, so a stack promoting from this one judges the same task.
    assert run.outputs["task"] == "embedding" and run.outputs["cosineMin"] == 0.99
    # Without labels there is no accuracyDelta, and the engine drops the null output: not a missing output.
    outputs = {key: value for key, value in EMBEDDING_OUTPUTS.items() if value is not None}
    assert "accuracyDelta" not in outputs and parse_release(SOURCE, outputs).task == "embedding"


def test_a_source_without_a_task_is_promoted_as_a_classifier(program, source):
    run = program("local", config=promoting())
    assert run.error is None, run.error
    figures = dynamic(run)["promotion-model"]["figures"]
    assert figures["task"] == "classification" and figures.get("cosineMean") is None  # the engine drops nulls
    assert run.outputs["task"] == "classification"


def test_gate_failures_judge_like_the_build():
    # Figures without a task (a source built before builds were task-aware) and a gate without the
    # task-aware thresholds: judged as a classifier, as before.
    gate = {"min_agreement": 0.99, "max_accuracy_drop": 0.01}
    assert gate_failures({"agreement": 0.99, "accuracyDelta": -0.01}, gate) == []
    assert gate_failures({"agreement": 0.99, "accuracyDelta": None}, gate) == []
    assert gate_failures({"agreement": 0.989, "accuracyDelta": -0.02}, gate) == [
        "agreement 0.9890 < min_agreement 0.99", "top-1 drop 0.0200 > max_accuracy_drop 0.01"]
    assert gate_failures({"agreement": None, "accuracyDelta": None}, gate) == ["no measured agreement (None)"]
    # Sequence models: agreement per step, as a classifier.
    assert gate_failures({"task": "sequence", "agreement": 0.98, "cosineMean": 1.0}, gate) == [
        "agreement 0.9800 < min_agreement 0.99"]
    # Embedding: the cosine, not the argmax agreement; a gate that predates min_cosine gets its default.
    embedding = {"task": "embedding", "agreement": 0.7, "accuracyDelta": -0.3, "cosineMean": 0.999,
                 "cosineMin": 0.99}
    assert gate_failures(embedding, gate) == []
    assert gate_failures({**embedding, "cosineMean": 0.97, "cosineMin": 0.9}, gate) == [
        "cosineMean 0.9700 < min_cosine 0.99", "cosineMin 0.9000 < min_cosine_worst 0.95"]
    assert gate_failures({**embedding, "cosineMean": 0.97}, {**gate, "min_cosine": 0.95}) == []
    # Regression: the relative error, at the gate passes.
    regression = {"task": "regression", "agreement": 0.0, "relativeError": 0.05}
    assert gate_failures(regression, gate) == []
    assert gate_failures({**regression, "relativeError": 0.08}, gate) == [
        "relativeError 0.0800 > max_relative_error 0.05"]
    assert gate_failures({**regression, "relativeError": 0.08}, {**gate, "max_relative_error": 0.1}) == []
    release = parse_release(SOURCE, SOURCE_OUTPUTS)
    assert release.summary == f"promoted from local: model {DIGEST[:12]}…, image sha256:cdcdcdcdcdcd…"
