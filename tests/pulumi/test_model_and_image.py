"""The optimize step and the image build in the resource graph: inputs, ordering and outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifacts.store import sha256_file
from tests.pulumi_harness import ROOT, stack_config

STACKS = ("dev", "prod", "local")


@pytest.mark.parametrize("stack", STACKS)
def test_optimized_model_inputs_are_content_digests_and_the_recipe(program, stack):
    run = program(stack)
    model = run.named("model").inputs
    cfg = stack_config(stack)["modelstack:model"]
    assert model["sourceSha256"] == sha256_file(ROOT / cfg["source"])
    assert model["validationSha256"] == sha256_file(ROOT / cfg["validationData"])
    assert model.get("trainingSha256") == (sha256_file(ROOT / cfg["trainingData"]) if "trainingData" in cfg else None)
    recipe = stack_config(stack)["modelstack:recipe"]
    from optimize.recipe import load_recipe

    assert model["recipe"]["name"] == load_recipe(recipe, ROOT).name  # a preset by name, or a file of the project
    assert set(model["toolVersions"]) >= {"torch", "onnx", "onnxruntime", "optimize"}
    assert model["storeUri"] == stack_config(stack)["modelstack:artifacts"]["store"]
    assert "__provider" in model  # the pickled provider the engine will run


@pytest.mark.parametrize("stack", STACKS)
def test_image_build_waits_for_the_model(program, stack):
    """A failed accuracy gate fails the model, so the image that depends on it is never built."""
    run = program(stack)
    model = run.named("model")
    image = run.one("docker-build:index:Image")
    assert model.urn in image.dependencies
    assert image.inputs["push"] is True
    assert image.inputs["tags"][0].split(":")[-1].startswith(run.outputs["modelDigest"][:12])
    deployment = run.serving_workload()
    assert image.urn in deployment.dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_the_build_context_is_named_relative_to_the_project(program, stack):
    """Another checkout of the same commit (a CI runner's workspace) must preview no image change."""
    image = program(stack).one("docker-build:index:Image").inputs
    context, dockerfile = image["context"]["location"], image["dockerfile"]["location"]
    assert not Path(context).is_absolute() and context.startswith(".modelstack/")
    assert dockerfile == f"{context}/Dockerfile"


def test_prod_builds_the_gpu_variant_and_logs_in_with_a_secret(program):
    run = program("prod")
    image = run.one("docker-build:index:Image")
    assert image.inputs["buildArgs"] == {"VARIANT": "gpu"}
    assert image.inputs["tags"][0].endswith("-gpu")
    (login,) = image.inputs["registries"]
    assert login["password"] == "mock-ecr-token-3c9d"
    assert image.secret_inputs, "the registry password must reach the image build as a secret"


def test_dev_pushes_to_the_local_registry_without_login(program):
    image = program("dev").one("docker-build:index:Image").inputs
    assert image["buildArgs"] == {"VARIANT": "cpu"}
    assert image["tags"][0].startswith("localhost:5001/modelstack/digits:")
    assert not image.get("registries")


def test_local_builds_offline_with_its_own_builder_and_no_docker_or_aws_provider(program):
    run = program("local")
    image = run.one("docker-build:index:Image").inputs
    assert image["builder"] == {"name": "modelstack-local"}
    assert image["buildArgs"] == {"VARIANT": "cpu", "BASE_IMAGE": "127.0.0.1:35000/modelstack-base:bookworm-py311"}
    assert image["tags"][0].startswith("127.0.0.1:35000/modelstack/digits:")
    assert image["cacheTo"][0]["registry"]["ref"] == "127.0.0.1:35000/modelstack/digits:buildcache-cpu"
    assert not image.get("registries")  # the local registry takes anonymous pushes
    # Neither provider can be built from Go modules, so the stack the real engine runs must not need them.
    assert not [r.type for r in run.resources if r.type.startswith(("docker:", "aws:", "pulumi:providers:docker",
                                                                    "pulumi:providers:aws"))]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_exports_model_figures(program, stack):
    outputs = program(stack).outputs
    for key in ("modelDigest", "modelArtifact", "sizeRatio", "accuracyDelta", "agreement", "latencyP50Ms",
                "latencyP99Ms", "image", "endpoint"):
        assert outputs.get(key) is not None, f"stack output {key} missing"
    assert outputs["image"].endswith("@sha256:" + outputs["image"].split("@sha256:")[-1])


@pytest.mark.parametrize("stack", STACKS)
def test_server_settings_in_the_configmap_are_ones_the_server_accepts(program, stack, monkeypatch, tmp_path):
    """The ConfigMap feeds the container's env: every key must be a setting serving/settings.py knows."""
    from serving.settings import Settings

    run = program(stack)
    (config_map,) = [r for r in run.of_type("kubernetes:core/v1:ConfigMap") if r.name == "serving-config"]
    data = config_map.inputs["data"]
    assert data, "no server settings"
    for key, value in data.items():
        assert key.startswith("MODELSTACK_SERVING_"), key
        # pydantic-settings ignores env vars it does not know, so check the names explicitly.
        assert key.removeprefix("MODELSTACK_SERVING_").lower() in Settings.model_fields, f"{key} is no setting"
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MODELSTACK_SERVING_MODEL_DIR", str(tmp_path))  # the image sets it
    settings = Settings()  # a malformed value fails validation here
    cfg = stack_config(stack)["modelstack:serving"]
    assert settings.max_batch_size == cfg["maxBatchSize"]
    assert settings.device == ("cuda" if cfg.get("gpu") else "cpu")


def test_a_stack_that_names_its_nodes_cpu_builds_int8_for_it(program):
    """model.targetCpu overrides the recipe's target (the build machine's CPU by default)."""
    cfg = stack_config("dev")
    cfg["modelstack:model"] = {**cfg["modelstack:model"], "targetCpu": "avx512-vnni"}
    model = program("dev", cfg).one("pulumi-python:dynamic:Resource").inputs
    assert model["recipe"]["quantize"]["target_cpu"] == "avx512-vnni"
    assert program("dev").one("pulumi-python:dynamic:Resource").inputs["recipe"]["quantize"]["target_cpu"] == "auto"
