"""What the PromotedModel and ImageCopy providers do, as plain functions (no Pulumi imports).

- `promote_artifact`: make the tested artifact present in this stack's store, by digest: verified
  against the digest (sha256 of model.onnx) and its manifest, copied from the source stack's store only
  when the stores differ and this one lacks it (so a second run copies nothing).
- `copy_image`: put the tested image into this stack's registry under the same digest (skopeo, which
  preserves digests), and check the digest the registry serves.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .store import ArtifactStoreError, open_store, sha256_file


class PromotionError(ArtifactStoreError):
    """The tested artifact or image cannot be verified or copied: shown to the user as its one line."""


def source_store_uri(artifact_uri: str, digest: str) -> str:
    """The store an artifact URI lives in: the URI without its trailing /<digest>."""
    head, _, last = artifact_uri.rstrip("/").rpartition("/")
    if last != digest or not head:
        raise PromotionError(f"artifact URI {artifact_uri!r} does not end in its digest {digest[:12]}")
    return head


def promote_artifact(props: dict[str, Any]) -> dict[str, Any]:
    project_dir = Path(props["projectDir"])
    digest = props["digest"]
    region, endpoint = props.get("storeRegion"), props.get("storeEndpoint")
    target = open_store(props["storeUri"], project_dir, region, endpoint)
    copied = target.manifest(digest) is None
    if copied:
        source_uri = source_store_uri(props["sourceArtifactUri"], digest)
        source = open_store(source_uri, project_dir, region, endpoint)
        scratch = Path(tempfile.mkdtemp(prefix="modelstack-promote-"))
        try:
            fetched = source.fetch(digest, scratch / digest)  # verifies every file against the manifest
            _check_digest(sha256_file(fetched / "model.onnx"), digest, source.uri(digest))
            target.publish(digest, {p.name: p for p in sorted(fetched.iterdir())})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    else:  # already here (an earlier run, or the same store): still the tested bytes?
        _check_digest(hashlib.sha256(target.read(digest, "model.onnx")).hexdigest(), digest, target.uri(digest))
    report = json.loads(target.read(digest, "report.json"))
    return {**props, "artifactUri": target.uri(digest), "copied": copied, "reportDigest": report.get("digest")}


def _check_digest(actual: str, digest: str, where: str) -> None:
    if actual != digest:
        raise PromotionError(f"{where}: model.onnx hashes to {actual[:12]}, not the tested digest {digest[:12]}; "
                             "the artifact was altered")


def copy_image(props: dict[str, Any]) -> dict[str, Any]:
    """SOURCE_REPO@DIGEST -> DEST_REPO:TAG, the same manifest bytes; outputs the pinned destination.

    skopeo, because it keeps digests (`--preserve-digests`); `buildx imagetools create` wraps a single
    manifest into a new list, a new digest (seen here). Credentials: skopeo reads Docker's config.json
    (`docker login`) or containers' auth.json (`skopeo login`).
    """
    source, digest = props["sourceRepository"], props["digest"]
    dest = f"{props['repository']}:{props['tag']}"
    if shutil.which("skopeo") is None:
        raise PromotionError("image copy: `skopeo` is not on PATH; install it (Debian/Ubuntu: apt-get install skopeo)")
    _run(["skopeo", "copy", "--all", "--preserve-digests", *_tls("src", source), *_tls("dest", dest),
          f"docker://{source}@{digest}", f"docker://{dest}"], "copy")
    raw = _run(["skopeo", "inspect", "--raw", *_tls("", dest), f"docker://{dest}"], "inspect")
    served = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    if served != digest:
        raise PromotionError(f"{dest}: the registry serves {served[:19]} after the copy, not the tested {digest[:19]}")
    return {**props, "ref": f"{dest}@{digest}"}


def _tls(side: str, reference: str) -> list[str]:
    """Plain HTTP for loopback registries only, as Docker allows by default."""
    host = reference.split("/", 1)[0].rsplit(":", 1)[0]
    flag = f"--{side}-tls-verify=false" if side else "--tls-verify=false"
    return [flag] if host in ("127.0.0.1", "localhost", "[::1]") else []


def _run(args: list[str], what: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PromotionError(f"image {what} failed ({args[-1]}): {last}")
    return proc.stdout
