"""Image references a stack names (not the ones it builds): pinned by digest as they are, or, on a registry
on this machine's loopback (the local cluster's), a tag resolved to the digest the registry serves for it,
each time the config is read, as Docker's `getRegistryImage` does. Kubernetes then runs exactly that digest.

No Pulumi here: the config loader calls it before any resource is registered, so a registry that does not
answer is a config error, not a half-made update.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
# What a registry may serve for a tag: an OCI index or manifest, or Docker's list or manifest.
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class ImageRefError(ValueError):
    """An image reference that cannot be pinned; the message says how to fix it."""


def is_pinned(ref: str) -> bool:
    return bool(DIGEST.search(ref))


def pin(ref: str, timeout_s: float = 5.0) -> str:
    """`ref` itself when it carries a digest, else REGISTRY/REPO:TAG@sha256:... for a loopback registry's tag."""
    if is_pinned(ref):
        return ref
    registry, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    if not rest or not repository or "/" in tag or registry.rpartition(":")[0] not in LOOPBACK:
        raise ImageRefError(f"'{ref}' has no digest; pin it as REPOSITORY:TAG@sha256:DIGEST (only a tag on a "
                            "registry on this machine's loopback, such as the local cluster's, is looked up)")
    url = f"http://{registry}/v2/{repository}/manifests/{tag}"
    request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            digest = response.headers.get("Docker-Content-Digest", "")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ImageRefError(f"the registry {registry} has no '{repository}:{tag}' (local-cluster/cluster.sh up "
                                "pushes the local cluster's images)") from None
        raise ImageRefError(f"the registry {registry} answered {exc.code} for '{repository}:{tag}'") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageRefError(f"the registry {registry} does not answer ({reason}); start it "
                            "(local-cluster/cluster.sh up) or pin the image by digest") from None
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ImageRefError(f"the registry {registry} sent no digest for '{repository}:{tag}'")
    return f"{ref}@{digest}"
