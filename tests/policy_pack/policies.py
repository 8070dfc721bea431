"""The policies the pack must list: name -> (rule function, enforcement level, resource or stack)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policy import rules

Rule = Callable[[str, dict[str, Any]], list[str]]
MANDATORY, ADVISORY = "mandatory", "advisory"

POLICIES: dict[str, tuple[Rule, str, str]] = {
    "pod-security-restricted": (rules.pod_security_restricted, MANDATORY, "resource"),
    "image-pinned-by-digest": (rules.image_pinned_by_digest, MANDATORY, "resource"),
    "requests-and-limits": (rules.requests_and_limits, MANDATORY, "resource"),
    "no-secrets-in-plain-config": (rules.no_secrets_in_plain_config, MANDATORY, "resource"),
    "hpa-min-not-above-max": (rules.hpa_min_not_above_max, MANDATORY, "resource"),
    "model-meets-gate": (rules.model_meets_gate, MANDATORY, "resource"),
    "built-model-meets-gate": (rules.built_model_meets_gate, MANDATORY, "stack"),
    "ecr-immutable-scan-on-push": (rules.ecr_immutable_scan_on_push, MANDATORY, "resource"),
    "serving-egress-restricted": (rules.serving_egress_restricted, MANDATORY, "resource"),
    "monitoring-egress-restricted": (rules.monitoring_egress_restricted, MANDATORY, "resource"),
    "nodes-imds-v2-one-hop": (rules.nodes_imds_v2_one_hop, MANDATORY, "resource"),
    "node-ami-pinned": (rules.node_ami_pinned, MANDATORY, "resource"),
    "serving-replicas-for-availability": (rules.serving_replicas_for_availability, ADVISORY, "resource"),
}
