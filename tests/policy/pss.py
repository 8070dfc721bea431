"""Pod Security Standards `restricted` for the mocked tests: the policy pack's checker
(policy/rules/pss.py) is the one implementation; this module only keeps its old import path."""

from __future__ import annotations

from policy.rules.pss import (
    APPARMOR_OK,
    BASELINE_CAPABILITIES,
    RESTRICTED_VOLUMES,
    SAFE_SYSCTLS,
    SECCOMP_OK,
    SELINUX_TYPES,
    baseline_violations,
    restricted_violations,
)

__all__ = [
    "APPARMOR_OK",
    "BASELINE_CAPABILITIES",
    "RESTRICTED_VOLUMES",
    "SAFE_SYSCTLS",
    "SECCOMP_OK",
    "SELINUX_TYPES",
    "baseline_violations",
    "restricted_violations",
]
