"""The modelstack CrossGuard policy pack: pulumi_policy wrappers around the plain rules in rules/.

Started as `python -u policy/` (policy/analyzer does that in policy/.venv), so this directory is
sys.path[0] and `rules` imports as a top-level package; the tests import the same code as
`policy.rules` from the main virtualenv, which has no pulumi_policy. PolicyPack prints its gRPC
port on stdout and serves until it is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import rules
from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
    proxy,
)
from rules.props import UNKNOWN_SENTINELS

Rule = Callable[[str, dict[str, Any]], list[str]]
MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY

# The rules know unknowns by pulumi_policy's sentinels: refuse to start if a release changes them.
PROXY_SENTINELS = {v for k, v in vars(proxy).items() if k.startswith("UNKNOWN_") and k.endswith("_VALUE")}
if PROXY_SENTINELS != UNKNOWN_SENTINELS:
    raise SystemExit("policy pack: rules/props.py UNKNOWN_SENTINELS differ from pulumi_policy.proxy's; update them")


def plain(value: Any) -> Any:
    """The values under pulumi_policy's unknown-checking proxies, sentinels kept (the rules skip them)
    instead of the proxies' UnknownValueError, which would turn a whole policy into a preview warning."""
    if isinstance(value, proxy._DictProxy | proxy._ListProxy):
        value = value["__target"]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def resource_policy(name: str, description: str, rule: Rule, level: EnforcementLevel = MANDATORY
                    ) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule(args.resource_type, plain(args.props)):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level)


def stack_policy(name: str, description: str, rule: Rule, level: EnforcementLevel = MANDATORY
                 ) -> StackValidationPolicy:
    """Runs `rule` over every resource's final props (outputs, at the end of preview and of `up`)."""
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for resource in args.resources:
            for message in rule(resource.resource_type, plain(resource.props)):
                report_violation(message, resource.urn)

    return StackValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level)


POLICIES = [
    resource_policy("pod-security-restricted", "Pods of ours meet Pod Security Standards `restricted`.",
                    rules.pod_security_restricted),
    resource_policy("image-pinned-by-digest", "Every container image is pinned by digest (@sha256:...).",
                    rules.image_pinned_by_digest),
    resource_policy("requests-and-limits", "Containers of ours set cpu and memory requests and a memory limit.",
                    rules.requests_and_limits),
    resource_policy("no-secrets-in-plain-config", "No secrets in ConfigMaps or in plain container env values.",
                    rules.no_secrets_in_plain_config),
    resource_policy("hpa-min-not-above-max", "A HorizontalPodAutoscaler's minReplicas is not above maxReplicas.",
                    rules.hpa_min_not_above_max),
    resource_policy("model-meets-gate", "The model's measured figures meet this stack's accuracy gate.",
                    rules.model_meets_gate),
    stack_policy("built-model-meets-gate", "The built model's measured figures meet this stack's accuracy gate.",
                 rules.built_model_meets_gate),
    resource_policy("ecr-immutable-scan-on-push", "ECR repositories have immutable tags and scan on push.",
                    rules.ecr_immutable_scan_on_push),
    resource_policy("serving-egress-restricted", "The serving pods' NetworkPolicy restricts egress too.",
                    rules.serving_egress_restricted),
    resource_policy("monitoring-egress-restricted", "The monitoring pods' NetworkPolicies restrict egress too.",
                    rules.monitoring_egress_restricted),
    resource_policy("nodes-imds-v2-one-hop", "GPU nodes answer IMDS with v2 tokens and one hop only.",
                    rules.nodes_imds_v2_one_hop),
    resource_policy("node-ami-pinned", "Karpenter's node AMI is a pinned release, not @latest.",
                    rules.node_ami_pinned),
    resource_policy("serving-replicas-for-availability", "The serving Deployment runs at least two replicas.",
                    rules.serving_replicas_for_availability, ADVISORY),
]

PolicyPack("modelstack", policies=list(POLICIES))
