"""Rules over AWS resources."""

from __future__ import annotations

from typing import Any

from .props import UNKNOWN, get

ECR_REPOSITORY = "aws:ecr/repository:Repository"
IMMUTABLE = ("IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION")
# A BuildKit registry cache (components/registry.py names it <repository>-buildcache) holds cache
# blobs that nothing deploys, and BuildKit rewrites its tag on every build: it cannot be immutable.
BUILD_CACHE_SUFFIX = "-buildcache"


def ecr_immutable_scan_on_push(type_token: str, props: dict[str, Any]) -> list[str]:
    if type_token != ECR_REPOSITORY:
        return []
    name = get(props, "name")
    if isinstance(name, str) and name.endswith(BUILD_CACHE_SUFFIX):
        return []
    out = []
    mutability = get(props, "imageTagMutability")
    if mutability is not UNKNOWN and mutability not in IMMUTABLE:
        out.append(f"imageTagMutability is {mutability or 'unset (MUTABLE)'}: set IMMUTABLE, so a tag can never "
                   "be pointed at other content")
    scan = get(props, "imageScanningConfiguration", "scanOnPush")
    if scan is not UNKNOWN and scan is not True:
        out.append("imageScanningConfiguration.scanOnPush is not true: set it, so every pushed image is scanned "
                   "for known vulnerabilities")
    return out
