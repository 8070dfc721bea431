"""The resources the program really registers, per stack file, pass every mandatory policy."""

from __future__ import annotations

from typing import Any

import pytest

from policy.rules import kubernetes, pss
from policy.rules.workloads import NAME_LABEL, label, pod_templates
from tests.policy_pack.policies import MANDATORY, POLICIES
from tests.pulumi_harness import ProgramRun, Registered, _computed_outputs, run_program

STACKS = ("dev", "prod", "local")
SECRETS = {"grafanaAdminPassword": "not-a-real-password-7f3a"}
@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    return {stack: run_program(stack, secrets=SECRETS) for stack in STACKS}


def judged_props(res: Registered, kind: str) -> dict[str, Any]:
    """Inputs for resource policies; for stack policies the outputs (what the mock providers report)."""
    if kind == "stack":
        return {**res.inputs, **_computed_outputs(res.type, res.name, res.inputs)}
    return res.inputs


def findings(run: ProgramRun, level: str) -> set[tuple[str, str, str]]:
    found = set()
    for policy, (rule, policy_level, kind) in POLICIES.items():
        if policy_level != level:
            continue
        for res in run.resources:
            if rule(res.type, judged_props(res, kind)):
                found.add((run.stack, policy, res.name))
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_program_passes_every_mandatory_policy(runs, stack):
    run = runs[stack]
    unexpected = findings(run, MANDATORY)
    details = [f"{p} {n}: {m}" for (_, p, n) in sorted(unexpected)
               for res in run.resources if res.name == n for m in POLICIES[p][0](res.type, res.inputs)]
    assert not unexpected, "\n".join(details)


@pytest.mark.parametrize("stack", STACKS)
def test_the_rules_had_something_to_judge(runs, stack):
    run = runs[stack]
    workloads = [res for res in run.resources  # local's serving pods belong to an Argo Rollout
                 if res.type in ("kubernetes:apps/v1:Deployment", "kubernetes:argoproj.io/v1alpha1:Rollout")]
    assert any(label(res.inputs, "app.kubernetes.io/component") == kubernetes.SERVING_COMPONENT for res in workloads)
    assert all(pod_templates(res.type, res.inputs) for res in workloads)
    assert run.of_type("pulumi-python:dynamic:Resource")
    assert run.of_type("kubernetes:core/v1:ConfigMap")
    if stack == "prod":
        assert run.of_type("aws:ecr/repository:Repository") and run.of_type(
            "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")


def test_serving_replicas_advisory_fires_on_dev_only(runs):
    advisories = {stack: findings(runs[stack], "advisory") for stack in STACKS}
    assert advisories == {"dev": {("dev", "serving-replicas-for-availability", "serving-deployment")},
                          "prod": set(), "local": set()}


def test_host_agent_waivers_cover_exactly_what_prod_needs(runs):
    agents = [res for res in runs["prod"].resources
              if label(res.inputs, NAME_LABEL) in kubernetes.HOST_AGENTS and pod_templates(res.type, res.inputs)]
    assert {label(res.inputs, NAME_LABEL) for res in agents} == set(kubernetes.HOST_AGENTS)
    for res in agents:
        controls = {f.control for _, t in pod_templates(res.type, res.inputs) for f in pss.restricted_findings(t)}
        # Each waiver is still needed (no stale entries), and waives nothing beyond what the agent needs.
        assert controls == kubernetes.HOST_AGENTS[label(res.inputs, NAME_LABEL)], res.name
