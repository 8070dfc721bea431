"""Each rule on a passing and a failing resource, and on values not known at preview."""

from __future__ import annotations

from typing import Any

import pytest

from policy.rules import (
    built_model_meets_gate,
    ecr_immutable_scan_on_push,
    hpa_min_not_above_max,
    image_pinned_by_digest,
    model_meets_gate,
    monitoring_egress_restricted,
    no_secrets_in_plain_config,
    node_ami_pinned,
    nodes_imds_v2_one_hop,
    pod_security_restricted,
    requests_and_limits,
    serving_egress_restricted,
    serving_replicas_for_availability,
)
from policy.rules.aws import EC2_NODE_CLASS, LAUNCH_TEMPLATE, NODE_GROUP
from policy.rules.props import UNKNOWN_SENTINELS
from tests.policy_pack import resources as r

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
MODEL = "pulumi-python:dynamic:Resource"
ECR = "aws:ecr/repository:Repository"


def one(messages: list[str]) -> str:
    assert len(messages) == 1, messages
    return messages[0]


# --- pod-security-restricted -------------------------------------------------------------------

def test_hardened_serving_deployment_passes_pod_security():
    assert pod_security_restricted(DEPLOYMENT, r.deployment()) == []


def _host_network(d):
    d["spec"]["template"]["spec"]["hostNetwork"] = True


def _host_path(d):
    d["spec"]["template"]["spec"]["volumes"].append({"name": "models", "hostPath": {"path": "/srv/models"}})


def _git_repo_volume(d):
    d["spec"]["template"]["spec"]["volumes"].append({"name": "src", "gitRepo": {"repository": "x"}})


def _privileged(d):
    r.first_container(d)["securityContext"]["privileged"] = True


def _escalation(d):
    del r.first_container(d)["securityContext"]["allowPrivilegeEscalation"]


def _root(d):
    del r.first_container(d)["securityContext"]["runAsNonRoot"]
    del d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def _seccomp(d):
    del r.first_container(d)["securityContext"]["seccompProfile"]
    del d["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]


def _no_drop(d):
    r.first_container(d)["securityContext"]["capabilities"] = {}


def _sys_admin(d):
    r.first_container(d)["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]


def _host_port(d):
    r.first_container(d)["ports"][0]["hostPort"] = 8080.0


@pytest.mark.parametrize(("breaks", "expected"), [
    (_host_network, "spec.template.spec.hostNetwork is true"),
    (_host_path, "spec.template.spec.volumes[models].hostPath"),
    (_git_repo_volume, "spec.template.spec.volumes[src] of type ['gitRepo'] is not allowed"),
    (_privileged, "spec.template.spec.containers[server].securityContext.privileged is true"),
    (_escalation, "spec.template.spec.containers[server].securityContext.allowPrivilegeEscalation is not false"),
    (_root, "spec.template.spec.containers[server].securityContext.runAsNonRoot is unset"),
    (_no_drop, "spec.template.spec.containers[server].securityContext.capabilities.drop does not drop ALL"),
    (_host_port, "spec.template.spec.containers[server].ports: hostPort 8080"),
])
def test_pod_security_names_the_field_that_breaks_restricted(breaks, expected):
    d = r.deployment()
    breaks(d)
    assert expected in one(pod_security_restricted(DEPLOYMENT, d))


def test_pod_security_without_seccomp_and_with_added_capabilities():
    d = r.deployment()
    _seccomp(d)
    assert "seccompProfile is unset" in one(pod_security_restricted(DEPLOYMENT, d))
    d = r.deployment()
    _sys_admin(d)
    found = pod_security_restricted(DEPLOYMENT, d)
    assert len(found) == 2 and all("['SYS_ADMIN']" in m for m in found), found  # baseline and restricted


def test_pod_security_only_net_bind_service_may_be_added():
    d = r.deployment()
    r.first_container(d)["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert pod_security_restricted(DEPLOYMENT, d) == []


def test_pod_security_judges_pods_jobs_and_cronjobs_at_their_template_path():
    pod = {"metadata": {"labels": r.labels()}, "spec": r.pod_spec()}
    pod["spec"]["hostPID"] = True
    assert one(pod_security_restricted("kubernetes:core/v1:Pod", pod)).startswith("spec.hostPID is true")
    job_spec = {"template": {"metadata": {"labels": r.labels()}, "spec": r.pod_spec()}}
    job_spec["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    cron = {"metadata": {"labels": r.labels()}, "spec": {"schedule": "@daily", "jobTemplate": {"spec": job_spec}}}
    assert one(pod_security_restricted("kubernetes:batch/v1:CronJob", cron)).startswith(
        "spec.jobTemplate.spec.template.spec.containers[server].securityContext.privileged")
    job = {"metadata": {"labels": r.labels()}, "spec": job_spec}
    assert one(pod_security_restricted("kubernetes:batch/v1:Job", job)).startswith("spec.template.spec.containers")


def test_pod_security_leaves_third_party_objects_alone():
    d = r.deployment()
    _host_network(d)
    for meta in (d["metadata"], d["spec"]["template"]["metadata"]):
        meta["labels"] = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/part-of": "ingress-nginx"}
    assert pod_security_restricted(DEPLOYMENT, d) == []


def test_host_agents_are_waived_only_the_controls_they_need():
    d = r.deployment(component="gpu")
    for meta in (d["metadata"], d["spec"]["template"]["metadata"]):
        meta["labels"] = r.labels("gpu", name="nvidia-device-plugin")
    _host_path(d)
    _root(d)
    assert pod_security_restricted("kubernetes:apps/v1:DaemonSet", d) == []
    _host_network(d)
    assert "hostNetwork" in one(pod_security_restricted("kubernetes:apps/v1:DaemonSet", d))
    d["metadata"]["labels"]["app.kubernetes.io/name"] = "my-agent"  # any other workload: no waiver
    assert len(pod_security_restricted("kubernetes:apps/v1:DaemonSet", d)) == 3


def test_pod_security_skips_what_is_unknown_at_preview():
    d = r.deployment()
    r.first_container(d)["securityContext"] = r.UNKNOWN
    d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = r.UNKNOWN
    assert pod_security_restricted(DEPLOYMENT, d) == []
    d = r.deployment()
    r.first_container(d)["securityContext"]["allowPrivilegeEscalation"] = r.UNKNOWN
    r.first_container(d)["securityContext"]["capabilities"]["drop"] = [r.UNKNOWN]
    d["spec"]["template"]["spec"]["volumes"] = r.UNKNOWN
    assert pod_security_restricted(DEPLOYMENT, d) == []
    d = r.deployment()
    _host_network(d)
    d["metadata"]["labels"] = d["spec"]["template"]["metadata"]["labels"] = r.UNKNOWN  # not known to be ours
    assert pod_security_restricted(DEPLOYMENT, d) == []


# --- image-pinned-by-digest --------------------------------------------------------------------

def test_image_pinned_by_digest_passes_and_fails():
    assert image_pinned_by_digest(DEPLOYMENT, r.deployment()) == []
    d = r.deployment()
    r.first_container(d)["image"] = "localhost:5000/modelstack/digits:v1"
    message = one(image_pinned_by_digest(DEPLOYMENT, d))
    assert message.startswith("spec.template.spec.containers[server].image 'localhost:5000/modelstack/digits:v1'")
    assert "@sha256:" in message


def test_image_pinned_by_digest_judges_init_containers_and_third_party_pods():
    d = r.deployment()
    d["metadata"]["labels"] = d["spec"]["template"]["metadata"]["labels"] = {}
    d["spec"]["template"]["spec"]["initContainers"] = [r.container("fetch", image="busybox:1.36")]
    assert one(image_pinned_by_digest(DEPLOYMENT, d)).startswith("spec.template.spec.initContainers[fetch].image")
    d["spec"]["template"]["spec"]["initContainers"][0]["image"] = "busybox@sha256:" + "ab" * 31  # 62 hex: no
    assert len(image_pinned_by_digest(DEPLOYMENT, d)) == 1


def test_image_not_known_at_preview_is_not_judged():
    d = r.deployment()
    r.first_container(d)["image"] = r.UNKNOWN  # the pushed digest comes from the image build
    assert image_pinned_by_digest(DEPLOYMENT, d) == []
    assert image_pinned_by_digest("kubernetes:core/v1:Service", {"spec": {"ports": []}}) == []


# --- requests-and-limits -----------------------------------------------------------------------

def test_requests_and_limits_pass_with_optional_cpu_limit():
    d = r.deployment()
    assert requests_and_limits(DEPLOYMENT, d) == []
    del r.first_container(d)["resources"]["limits"]["cpu"]
    assert requests_and_limits(DEPLOYMENT, d) == []


@pytest.mark.parametrize(("section", "key"), [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")])
def test_requests_and_limits_name_the_missing_one(section, key):
    d = r.deployment()
    del r.first_container(d)["resources"][section][key]
    assert one(requests_and_limits(DEPLOYMENT, d)).startswith(
        f"spec.template.spec.containers[server].resources.{section}.{key} is missing")


def test_requests_and_limits_cover_init_containers_but_not_third_party_or_unknown():
    d = r.deployment()
    init = r.container("migrate")
    del init["resources"]
    d["spec"]["template"]["spec"]["initContainers"] = [init]
    assert len(requests_and_limits(DEPLOYMENT, d)) == 3
    d["metadata"]["labels"] = d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    assert requests_and_limits(DEPLOYMENT, d) == []
    d = r.deployment()
    r.first_container(d)["resources"] = r.UNKNOWN
    assert requests_and_limits(DEPLOYMENT, d) == []


# --- no-secrets-in-plain-config ----------------------------------------------------------------

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"


def test_plain_settings_config_map_passes():
    assert no_secrets_in_plain_config(CONFIG_MAP, r.config_map()) == []


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("DB_PASSWORD", "hunter2", "data[DB_PASSWORD] has a secret-looking key"),
    ("api-key", "k", "data[api-key] has a secret-looking key"),
    ("tls.pem", PEM, "data[tls.pem] holds a PEM private key"),
    ("aws.ini", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n", "data[aws.ini] holds an AWS access key id"),
])
def test_secret_looking_config_map_entries_fail(key, value, expected):
    cm = r.config_map()
    cm["data"][key] = value
    assert one(no_secrets_in_plain_config(CONFIG_MAP, cm)).startswith(expected)


def test_secret_env_vars_need_a_secret_key_ref():
    d = r.deployment()
    env = r.first_container(d).setdefault("env", [])
    env += [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
            {"name": "GF_SECURITY_ADMIN_PASSWORD__FILE", "value": "/etc/grafana/admin/password"},
            {"name": "LOG_LEVEL", "value": "info"}, {"name": "API_KEY", "value": r.UNKNOWN}]
    assert no_secrets_in_plain_config(DEPLOYMENT, d) == []
    env.append({"name": "API_KEY", "value": "sk-live-1234"})
    assert one(no_secrets_in_plain_config(DEPLOYMENT, d)) == (
        "spec.template.spec.containers[server].env[API_KEY] is a secret-looking variable with a plain value: "
        "use valueFrom.secretKeyRef")
    env[-1] = {"name": "SETTINGS", "value": "id=AKIAIOSFODNN7EXAMPLE"}
    assert "env[SETTINGS].value holds an AWS access key id" in one(no_secrets_in_plain_config(DEPLOYMENT, d))


# --- hpa-min-not-above-max ---------------------------------------------------------------------

HPA_V2 = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"


@pytest.mark.parametrize(("low", "high"), [(3.0, 10.0), (3.0, 3.0), (None, 1.0)])
def test_hpa_within_bounds_passes(low, high):
    assert hpa_min_not_above_max(HPA_V2, r.hpa(low, high)) == []


def test_hpa_min_above_max_fails_in_v2_and_v1():
    assert one(hpa_min_not_above_max(HPA_V2, r.hpa(5.0, 3.0))).startswith(
        "spec.minReplicas 5 is above spec.maxReplicas 3")
    assert hpa_min_not_above_max("kubernetes:autoscaling/v1:HorizontalPodAutoscaler", r.hpa(2.0, 1.0))
    assert hpa_min_not_above_max(HPA_V2, r.hpa(r.UNKNOWN, 3.0)) == []  # type: ignore[arg-type]


# --- model-meets-gate --------------------------------------------------------------------------

def test_promoted_model_that_meets_the_gate_passes():
    assert model_meets_gate(MODEL, r.promoted_model()) == []
    # Exactly at the gate passes, as optimize/validate.py judges it.
    assert model_meets_gate(MODEL, r.promoted_model(agreement=0.999, accuracy_delta=0.0)) == []


def test_promoted_model_below_the_gate_fails_naming_figure_value_gate_and_source():
    message = one(model_meets_gate(MODEL, r.promoted_model(agreement=0.984)))
    assert message == ("figures.agreement: model argmax agreement 0.9840 is below this stack's gate min_agreement "
                       "0.999 (classification model, promoted from organization/modelstack/dev); promote a model that "
                       "passes, or relax modelstack:recipe's gate")
    message = one(model_meets_gate(MODEL, r.promoted_model(accuracy_delta=-0.02,
                                                           gate={**r.GATE, "min_agreement": 0.9})))
    assert message.startswith("figures.accuracyDelta: model top-1 drop 0.0200 is above this stack's gate "
                              "max_accuracy_drop 0.01 (classification model, promoted from "
                              "organization/modelstack/dev)")


def test_built_model_outputs_are_judged_against_the_recipe_gate():
    assert model_meets_gate(MODEL, r.optimized_model()) == []
    assert built_model_meets_gate(MODEL, r.optimized_model()) == []
    found = built_model_meets_gate(MODEL, r.optimized_model(agreement=0.95, accuracy_delta=-0.05))
    assert len(found) == 2
    assert found[0].startswith("agreement: model argmax agreement 0.9500 is below this stack's gate min_agreement 0.99 "
                               "(classification model); change modelstack:recipe")
    assert found[1].startswith("accuracyDelta: model top-1 drop 0.0500 is above")


def test_an_embedding_model_is_judged_by_cosine_not_argmax_agreement():
    # A real sentence embedder: argmax agreement 0.77 means nothing, cosine 0.999 is what counts.
    good = r.promoted_model(agreement=0.7, accuracy_delta=None, task="embedding", cosineMean=0.999, cosineMin=0.99)
    assert model_meets_gate(MODEL, good) == []
    message = one(model_meets_gate(MODEL, r.promoted_model(agreement=0.7, accuracy_delta=None, task="embedding",
                                                           cosineMean=0.97, cosineMin=0.96)))
    assert message == ("figures.cosineMean: model mean cosine similarity 0.9700 is below this stack's gate "
                       "min_cosine 0.99 (embedding model, promoted from organization/modelstack/dev); promote a "
                       "model that passes, or relax modelstack:recipe's gate")
    worst = one(model_meets_gate(MODEL, r.promoted_model(task="embedding", cosineMean=0.995, cosineMin=0.9)))
    assert worst.startswith("figures.cosineMin: model worst-row cosine similarity 0.9000 is below this stack's "
                            "gate min_cosine_worst 0.95 (embedding model")
    # The same over a built model's outputs, against its recipe's gate.
    assert built_model_meets_gate(MODEL, r.optimized_model(agreement=0.77, accuracy_delta=None, task="embedding",
                                                           cosineMean=0.999, cosineMin=0.99)) == []
    assert one(built_model_meets_gate(MODEL, r.optimized_model(agreement=0.77, task="embedding",
                                                               cosineMean=0.98))).startswith(
        "cosineMean: model mean cosine similarity 0.9800 is below this stack's gate min_cosine 0.99 (embedding")


def test_a_regression_model_is_judged_by_relative_error():
    assert model_meets_gate(MODEL, r.promoted_model(agreement=0.0, task="regression", relativeError=0.03)) == []
    assert model_meets_gate(MODEL, r.promoted_model(task="regression", relativeError=0.05)) == []  # at the gate
    message = one(model_meets_gate(MODEL, r.promoted_model(agreement=0.0, task="regression", relativeError=0.08)))
    assert message.startswith("figures.relativeError: model relative error 0.0800 is above this stack's gate "
                              "max_relative_error 0.05 (regression model, promoted from organization/modelstack/dev);")


def test_a_sequence_model_is_judged_by_agreement_per_step():
    assert model_meets_gate(MODEL, r.promoted_model(task="sequence", cosineMean=0.5)) == []
    assert one(model_meets_gate(MODEL, r.promoted_model(agreement=0.98, task="sequence"))).startswith(
        "figures.agreement: model argmax agreement 0.9800 is below this stack's gate min_agreement 0.999 "
        "(sequence model")


def test_figures_without_a_task_are_judged_as_before():
    # A source built before builds were task-aware: agreement and accuracy delta only.
    old = r.promoted_model()
    old["figures"] = r.legacy(old["figures"])
    assert model_meets_gate(MODEL, old) == []
    old["figures"]["agreement"] = 0.984
    assert one(model_meets_gate(MODEL, old)).startswith(
        "figures.agreement: model argmax agreement 0.9840 is below this stack's gate min_agreement 0.999 "
        "(classification")
    built = {k: v for k, v in r.optimized_model(agreement=0.95).items() if k in r.legacy(r.optimized_model())}
    assert one(built_model_meets_gate(MODEL, built)).startswith("agreement: model argmax agreement 0.9500 is below")


def test_a_gate_that_states_its_task_judges_by_it():
    # This stack's recipe says embedding: a source the build inferred as a classifier is judged by cosine.
    gate = {**r.STRICT_GATE, "task": "embedding"}
    assert model_meets_gate(MODEL, r.promoted_model(agreement=0.5, gate=gate)) == []
    assert one(model_meets_gate(MODEL, r.promoted_model(gate=gate, cosineMin=0.9))).startswith(
        "figures.cosineMin: model worst-row cosine similarity 0.9000 is below")
    # A source that never measured the figure the gate needs cannot pass it.
    old = r.promoted_model(gate=gate)
    old["figures"] = r.legacy(old["figures"])
    found = model_meets_gate(MODEL, old)
    assert [m.split(":")[0] for m in found] == ["figures.cosineMean", "figures.cosineMin"]
    assert found[0].startswith("figures.cosineMean: the source build measured no mean cosine similarity, which "
                               "this stack's gate min_cosine needs (embedding model, promoted from")


def test_a_gate_without_the_new_thresholds_gets_the_recipe_defaults():
    old_gate = {"max_accuracy_drop": 0.01, "min_agreement": 0.99}
    assert model_meets_gate(MODEL, r.promoted_model(gate=old_gate, task="embedding", cosineMean=0.991)) == []
    low = one(model_meets_gate(MODEL, r.promoted_model(gate=old_gate, task="embedding", cosineMean=0.985)))
    assert low.startswith("figures.cosineMean: model mean cosine similarity 0.9850 is below this stack's gate "
                          "min_cosine 0.99")
    off = one(model_meets_gate(MODEL, r.promoted_model(gate=old_gate, task="regression", relativeError=0.06)))
    assert off.startswith("figures.relativeError: model relative error 0.0600 is above this stack's gate "
                          "max_relative_error 0.05")


def test_an_unknown_task_is_reported_not_passed():
    message = one(model_meets_gate(MODEL, r.promoted_model(task="ranking")))
    assert message.startswith("figures.task: model task 'ranking' is not one the gate judges (classification, "
                              "sequence, ctc, embedding, regression, closeness) (promoted from "
                              "organization/modelstack/dev);")


def test_model_figures_not_known_yet_are_skipped():
    # At preview an OptimizedModel's figures are None (registered empty) or unknown; no labels: no delta.
    assert model_meets_gate(MODEL, r.optimized_model(agreement=None, accuracy_delta=None)) == []
    assert model_meets_gate(MODEL, r.optimized_model(agreement=r.UNKNOWN, accuracy_delta=r.UNKNOWN)) == []
    assert model_meets_gate(MODEL, r.optimized_model(agreement=0.999, accuracy_delta=None)) == []
    assert model_meets_gate(MODEL, {**r.promoted_model(), "figures": r.UNKNOWN}) == []
    # The task is an output too: unknown at preview, or known with its figures not yet.
    assert model_meets_gate(MODEL, r.optimized_model(agreement=0.5, task=r.UNKNOWN)) == []
    assert model_meets_gate(MODEL, r.optimized_model(task="embedding", cosineMean=r.UNKNOWN, cosineMin=None)) == []
    assert model_meets_gate(MODEL, r.optimized_model(task=None, agreement=None, accuracy_delta=None,
                                                     cosineMean=None, cosineMin=None, relativeError=None)) == []


def test_the_stack_policy_leaves_promotions_to_the_resource_policy():
    failing = r.promoted_model(agreement=0.5)
    assert model_meets_gate(MODEL, failing)
    assert built_model_meets_gate(MODEL, failing) == []  # the same figures: reported once, per resource
    assert model_meets_gate(MODEL, {"__provider": "...", "ref": "x"}) == []  # ImageCopy: no model


# --- ecr-immutable-scan-on-push ----------------------------------------------------------------

def test_immutable_scanned_ecr_repository_passes():
    assert ecr_immutable_scan_on_push(ECR, r.ecr_repository()) == []
    repo = r.ecr_repository()
    repo["imageTagMutability"] = "IMMUTABLE_WITH_EXCLUSION"
    assert ecr_immutable_scan_on_push(ECR, repo) == []


def test_mutable_or_unscanned_ecr_repository_fails():
    repo = r.ecr_repository()
    repo["imageTagMutability"] = "MUTABLE"
    del repo["imageScanningConfiguration"]
    found = ecr_immutable_scan_on_push(ECR, repo)
    assert len(found) == 2
    assert found[0].startswith("imageTagMutability is MUTABLE: set IMMUTABLE")
    assert found[1].startswith("imageScanningConfiguration.scanOnPush is not true")
    del repo["imageTagMutability"]  # the provider's default is MUTABLE
    assert "unset (MUTABLE)" in ecr_immutable_scan_on_push(ECR, repo)[0]


def test_ecr_build_cache_and_unknowns_are_not_judged():
    cache = {"name": "modelstack/text-classifier-buildcache", "imageTagMutability": "MUTABLE", "forceDelete": True}
    assert ecr_immutable_scan_on_push(ECR, cache) == []
    unknown = {"name": "x", "imageTagMutability": r.UNKNOWN, "imageScanningConfiguration": r.UNKNOWN}
    assert ecr_immutable_scan_on_push(ECR, unknown) == []


# --- serving-replicas-for-availability (advisory) ----------------------------------------------

def test_two_serving_replicas_pass_one_gets_the_advisory():
    assert serving_replicas_for_availability(DEPLOYMENT, r.deployment(replicas=2.0)) == []
    assert one(serving_replicas_for_availability(DEPLOYMENT, r.deployment(replicas=1.0))) == (
        "spec.replicas is 1: with one replica there is no capacity during a rollout's node drain or a pod restart; "
        "set modelstack:serving.replicas >= 2")


def test_replicas_advisory_is_for_the_serving_deployment_or_its_autoscaler_only():
    assert serving_replicas_for_availability(DEPLOYMENT, r.deployment(replicas=1.0, component="monitoring")) == []
    assert serving_replicas_for_availability(DEPLOYMENT, r.deployment(replicas=None)) == []  # an HPA owns it
    assert serving_replicas_for_availability(HPA_V2, r.hpa(3.0, 10.0)) == []
    assert "autoscaling.minReplicas >= 2" in one(serving_replicas_for_availability(HPA_V2, r.hpa(None, 10.0)))


# --- the props helpers -------------------------------------------------------------------------

@pytest.mark.parametrize("sentinel", sorted(UNKNOWN_SENTINELS))
def test_every_unknown_sentinel_is_skipped(sentinel: Any):
    d = r.deployment()
    r.first_container(d)["image"] = sentinel
    r.first_container(d)["securityContext"]["privileged"] = sentinel
    assert image_pinned_by_digest(DEPLOYMENT, d) == pod_security_restricted(DEPLOYMENT, d) == []


# --- Argo Rollouts: the same pod rules on a Rollout's template ---------------------------------

ROLLOUT = "kubernetes:argoproj.io/v1alpha1:Rollout"


def test_a_rollouts_pod_template_is_judged_as_a_deployments():
    hardened = r.rollout()
    for rule in (pod_security_restricted, image_pinned_by_digest, requests_and_limits,
                 serving_replicas_for_availability):
        assert rule(ROLLOUT, hardened) == [], rule.__name__
    privileged = r.rollout()
    r.first_container(privileged)["securityContext"]["privileged"] = True
    assert "privileged" in one(pod_security_restricted(ROLLOUT, privileged))
    tagged = r.rollout()
    r.first_container(tagged)["image"] = "registry.example/digits:latest"
    assert "digest" in one(image_pinned_by_digest(ROLLOUT, tagged))
    unbounded = r.rollout()
    del r.first_container(unbounded)["resources"]["limits"]
    assert requests_and_limits(ROLLOUT, unbounded)
    assert "spec.replicas is 1" in one(serving_replicas_for_availability(ROLLOUT, r.rollout(replicas=1.0)))


# --- nodes-imds-v2-one-hop, node-ami-pinned ----------------------------------------------------

def node_class(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": "gpu"},
            "spec": {"role": "node", "amiSelectorTerms": [{"alias": "al2023@v20251103"}],
                     "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required",
                                         "httpPutResponseHopLimit": 1.0}, **spec}}


def test_nodes_answer_imds_with_v2_tokens_and_one_hop_only():
    good = {"metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1.0}}
    assert nodes_imds_v2_one_hop(LAUNCH_TEMPLATE, good) == []
    assert nodes_imds_v2_one_hop(EC2_NODE_CLASS, node_class()) == []
    open_ = {"metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 2.0}}
    assert [m.split(" ")[0] for m in nodes_imds_v2_one_hop(LAUNCH_TEMPLATE, open_)] == [
        "metadataOptions.httpTokens", "metadataOptions.httpPutResponseHopLimit"]
    assert len(nodes_imds_v2_one_hop(LAUNCH_TEMPLATE, {})) == 2  # unset: EC2's defaults allow IMDSv1
    assert nodes_imds_v2_one_hop(LAUNCH_TEMPLATE, {"metadataOptions": {"httpEndpoint": "disabled"}}) == []
    assert nodes_imds_v2_one_hop(LAUNCH_TEMPLATE, {"metadataOptions": r.UNKNOWN}) == []
    assert one(nodes_imds_v2_one_hop(NODE_GROUP, {"clusterName": "c"})).startswith("no launchTemplate: EKS")
    assert nodes_imds_v2_one_hop(NODE_GROUP, {"launchTemplate": {"id": r.UNKNOWN, "version": r.UNKNOWN}}) == []
    hops = node_class(metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2.0})
    assert one(nodes_imds_v2_one_hop(EC2_NODE_CLASS, hops)).startswith("metadataOptions.httpPutResponseHopLimit is 2")


def test_karpenter_follows_a_pinned_ami_release_not_latest():
    assert node_ami_pinned(EC2_NODE_CLASS, node_class()) == []
    latest = node_class(amiSelectorTerms=[{"alias": "al2023@latest"}])
    assert one(node_ami_pinned(EC2_NODE_CLASS, latest)).startswith("amiSelectorTerms alias al2023@latest follows")
    assert node_ami_pinned(EC2_NODE_CLASS, node_class(amiSelectorTerms=r.UNKNOWN)) == []
    assert node_ami_pinned(LAUNCH_TEMPLATE, latest) == []


# --- serving-egress-restricted -------------------------------------------------------------------

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def network_policy(component: str = "inference", types: Any = ("Ingress", "Egress")) -> dict[str, Any]:
    labels = {"app.kubernetes.io/part-of": "modelstack", "app.kubernetes.io/component": component}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "digits", "labels": labels},
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "digits"}},
                     "policyTypes": list(types) if isinstance(types, tuple) else types}}


def test_the_serving_network_policy_restricts_egress_too():
    assert serving_egress_restricted(NETWORK_POLICY, network_policy()) == []
    assert one(serving_egress_restricted(NETWORK_POLICY, network_policy(types=("Ingress",)))).startswith(
        "spec.policyTypes is ['Ingress']: add Egress with the rules the pods need (the cluster DNS)")
    assert serving_egress_restricted(NETWORK_POLICY, network_policy(types=r.UNKNOWN)) == []
    # Other components' policies (Prometheus, Grafana) and third-party ones are not judged here.
    assert serving_egress_restricted(NETWORK_POLICY, network_policy("monitoring", ("Ingress",))) == []


def test_the_monitoring_network_policies_restrict_egress_too():
    for component in ("monitoring", "gpu-metrics"):
        assert monitoring_egress_restricted(NETWORK_POLICY, network_policy(component)) == []
        assert one(monitoring_egress_restricted(NETWORK_POLICY, network_policy(component, ("Ingress",)))).startswith(
            "spec.policyTypes is ['Ingress']: add Egress")
    assert monitoring_egress_restricted(NETWORK_POLICY, network_policy("monitoring", r.UNKNOWN)) == []
    assert monitoring_egress_restricted(NETWORK_POLICY, network_policy("inference", ("Ingress",))) == []
