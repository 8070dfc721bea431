"""The whole program under mocks, once per stack file: the resource graph it registers."""

from __future__ import annotations

import pulumi
import pytest

from scripts.stack_config import base_document
from tests.pulumi_harness import ROOT, stack_config

STACKS = ("dev", "prod")


@pytest.mark.parametrize("stack", STACKS)
def test_stack_runs_and_exports(program, stack):
    run = program(stack)
    assert run.resources, "nothing registered"
    cfg = stack_config(stack)
    assert run.outputs["namespace"] == f"modelstack-{stack}"
    assert run.outputs["modelName"] == cfg["modelstack:model"]["name"]
    from optimize.recipe import load_recipe

    assert run.outputs["recipe"] == load_recipe(cfg["modelstack:recipe"], ROOT).name  # a preset's, or a file's name


@pytest.mark.parametrize("stack", STACKS)
def test_kubernetes_objects_use_the_pinned_provider(program, stack):
    run = program(stack)
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == stack_config(stack)["modelstack:cluster"]["context"]
    k8s_objects = [r for r in run.resources if r.type.startswith("kubernetes:")]
    assert k8s_objects
    for obj in k8s_objects:
        assert obj.provider.startswith(provider.urn + "::"), f"{obj.name} does not use the stack's provider"


@pytest.mark.parametrize("stack", STACKS)
def test_children_are_parented_to_their_component(program, stack):
    run = program(stack)
    component = run.one("modelstack:index:ModelService")
    for type_ in ("kubernetes:core/v1:Namespace", "kubernetes:core/v1:ServiceAccount"):
        # GPU stacks add the device plugin's namespace (GpuNodePool's); one of each is the service's.
        (child,) = [r for r in run.of_type(type_) if r.parent == component.urn]
        assert child.name.startswith(component.name + "-")
    for comp in (r for r in run.resources if r.type.startswith("modelstack:index:")):
        for child in (r for r in run.resources if r.parent == comp.urn):
            assert child.name.startswith(comp.name + "-"), f"{child.name} does not derive from {comp.name}"


@pytest.mark.parametrize("stack", STACKS)
def test_namespace_enforces_restricted_pod_security(program, stack):
    run = program(stack)
    (ns,) = [r for r in run.of_type("kubernetes:core/v1:Namespace")
             if r.inputs["metadata"]["name"] == run.outputs["namespace"]]
    labels = ns.inputs["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_carries_the_recommended_labels(program, stack):
    run = program(stack)
    # The Helm Release is Pulumi's handle on a chart, not a Kubernetes object (it has no metadata).
    for obj in (r for r in run.resources if r.type.startswith("kubernetes:") and r.custom
                and not r.type.startswith("kubernetes:helm.sh")):
        labels = obj.inputs["metadata"]["labels"]
        for key in ("name", "instance", "version", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, f"{obj.type} {obj.name} lacks app.kubernetes.io/{key}"


def test_service_account_mounts_no_token(program):
    for sa in program("dev").of_type("kubernetes:core/v1:ServiceAccount"):
        assert sa.inputs["automountServiceAccountToken"] is False


def short_lived_config() -> dict:
    """What `make up STACK=pr-123` deploys: dev's config, pushing to dev's registry (scripts/stack_config.py)."""
    return base_document("pr-123")["config"]


def test_short_lived_stack_copied_from_dev_does_not_collide(program):
    """Nothing one stack names can be another's: Kubernetes objects, containers, stack-scoped names."""
    dev = program("dev")
    pr = program("PR_123", config=short_lived_config())

    def names(run):
        # Objects marked cluster-scoped-shared (the kind registry's KEP-1755 ConfigMap) are one per
        # cluster by definition: identical in every stack and retained on delete.
        k8s = {(r.type, r.inputs["metadata"].get("namespace"), r.inputs["metadata"].get("name"))
               for r in run.resources if r.type.startswith("kubernetes:")
               and (r.inputs["metadata"].get("annotations") or {}).get("modelstack.dev/shared") != "cluster"}
        docker = {(r.type, r.inputs.get("name")) for r in run.resources if r.type.startswith("docker:")}
        return k8s | docker

    assert pr.outputs["namespace"] == "modelstack-pr-123"
    assert not names(dev) & names(pr)
    assert not pr.of_type("docker:index/container:Container"), "a second registry container would collide"
    assert pr.outputs["registry"] == dev.outputs["registry"]  # pushes go to dev's registry


def test_secrets_are_read_as_secret_outputs(program):
    from components.config import load_stack_config

    program("prod")  # sets up the mocked engine with prod's config plus the operator's secrets
    cfg = load_stack_config()
    password = cfg.secrets["grafanaAdminPassword"]
    assert isinstance(password, pulumi.Output)
    assert pulumi.runtime.sync_await._sync_await(password.is_secret())


def test_no_secret_value_in_outputs_or_inputs_in_plain_text(program):
    secret = "not-a-real-password-7f3a"
    run = program("prod", secrets={"grafanaAdminPassword": secret})
    for res in run.resources:
        if secret in repr(res.inputs):
            assert res.secret_inputs, f"{res.type} {res.name} holds the password in plain text"
    for key, value in run.outputs.items():
        if secret in repr(value):
            assert key in run.secret_outputs


def test_the_local_stack_runs_its_prometheus_image_by_digest_and_no_grafana(program):
    run = program("local", secrets={})
    deployments = {r.inputs["metadata"]["name"]: r for r in run.of_type("kubernetes:apps/v1:Deployment")}
    assert set(deployments) == {"prometheus"}  # the model's pods belong to an Argo Rollout (a canary)
    (container,) = deployments["prometheus"].inputs["spec"]["template"]["spec"]["containers"]
    pinned = stack_config("local")["modelstack:monitoring"]["prometheusImage"] + "@sha256:"
    assert container["image"].startswith(pinned)  # the loopback tag, pinned when the config was read
    assert "grafanaUrl" not in run.outputs and "prometheusUrl" in run.outputs
    assert not [r for r in run.resources if "grafana" in r.name]
