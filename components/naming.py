"""Names derived from the stack, so stacks never collide in one cluster.

Kubernetes object names must be DNS-1123 labels (lower case alphanumerics and
'-', at most 63 characters). Pulumi stack names allow more (upper case, '_',
'.'), so they are folded into that alphabet here, in one place.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_LABEL = 63


def is_dns_label(value: str) -> bool:
    return len(value) <= MAX_LABEL and bool(DNS_LABEL.match(value))


def dns_label(*parts: str) -> str:
    """Join parts into a DNS-1123 label; long names keep a hash suffix to stay unique."""
    raw = "-".join(p for p in parts if p)
    label = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)
    if len(label) > MAX_LABEL:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        label = label[: MAX_LABEL - 9].rstrip("-") + "-" + digest
    if not label:
        raise ValueError(f"cannot derive a Kubernetes name from {raw!r}")
    return label


def stack_namespace(project: str, stack: str) -> str:
    """The serving namespace of a stack: '<project>-<stack>'."""
    return dns_label(project, stack)
