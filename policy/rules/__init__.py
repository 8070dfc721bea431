"""The policy pack's rules as plain functions: (type token, props) -> one line per violation.

No pulumi_policy here, so the tests (main .venv) import them as they are; policy/__main__.py
adapts each to a pulumi_policy policy.
"""

from .aws import ecr_immutable_scan_on_push, node_ami_pinned, nodes_imds_v2_one_hop
from .kubernetes import (
    hpa_min_not_above_max,
    image_pinned_by_digest,
    monitoring_egress_restricted,
    no_secrets_in_plain_config,
    pod_security_restricted,
    requests_and_limits,
    serving_egress_restricted,
    serving_replicas_for_availability,
)
from .model import built_model_meets_gate, model_meets_gate

__all__ = [
    "built_model_meets_gate",
    "ecr_immutable_scan_on_push",
    "hpa_min_not_above_max",
    "image_pinned_by_digest",
    "model_meets_gate",
    "monitoring_egress_restricted",
    "no_secrets_in_plain_config",
    "node_ami_pinned",
    "nodes_imds_v2_one_hop",
    "pod_security_restricted",
    "requests_and_limits",
    "serving_egress_restricted",
    "serving_replicas_for_availability",
]
