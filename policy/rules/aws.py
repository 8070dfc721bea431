"""Rules over AWS resources."""

from __future__ import annotations

from typing import Any

from .props import UNKNOWN, get, is_unknown

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


LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EC2_NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"


def nodes_imds_v2_one_hop(type_token: str, props: dict[str, Any]) -> list[str]:
    """Nodes answer IMDS with v2 tokens only and one hop, so a pod (one hop further) cannot take the node
    role's credentials. An EKS managed node group without a launch template gets EKS's defaults (IMDSv1
    allowed, two hops)."""
    if type_token == NODE_GROUP:
        template = get(props, "launchTemplate")
        if template is None:
            return ["no launchTemplate: EKS then allows IMDSv1 and a hop limit of 2, so pods can read the node "
                    "role's credentials; attach a launch template with metadataOptions httpTokens: required and "
                    "httpPutResponseHopLimit: 1"]
        return []
    if type_token == LAUNCH_TEMPLATE:
        options = get(props, "metadataOptions")
    elif type_token == EC2_NODE_CLASS:
        options = get(props, "spec", "metadataOptions")
    else:
        return []
    if options is UNKNOWN or get(options, "httpEndpoint") == "disabled":
        return []
    out = []
    tokens, hops = get(options, "httpTokens"), get(options, "httpPutResponseHopLimit")
    if tokens is not UNKNOWN and tokens != "required":
        out.append(f"metadataOptions.httpTokens is {tokens or 'unset (optional)'}: set required (IMDSv2 only)")
    if hops is not UNKNOWN and hops != 1:
        out.append(f"metadataOptions.httpPutResponseHopLimit is {hops or 'unset'}: set 1, so pods cannot reach IMDS")
    return out


def node_ami_pinned(type_token: str, props: dict[str, Any]) -> list[str]:
    """Karpenter's AMI is a pinned release: with `@latest`, every newly published AMI replaces every node."""
    if type_token != EC2_NODE_CLASS:
        return []
    out = []
    terms = get(props, "spec", "amiSelectorTerms")
    for term in terms if isinstance(terms, list) else []:
        alias = get(term, "alias")
        if isinstance(alias, str) and not is_unknown(alias) and alias.endswith("@latest"):
            out.append(f"amiSelectorTerms alias {alias} follows every AMI AWS publishes (Karpenter replaces each node "
                       "as drifted); pin a release, e.g. al2023@v20251103, and move it forward stack by stack")
    return out
