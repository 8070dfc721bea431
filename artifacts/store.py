"""Content-addressed artifact store: a local directory or S3, one interface.

An artifact is a set of files (model.onnx, report.json, ...) published under
the sha256 of model.onnx. Publishing is atomic: files go first, verified, and
`manifest.json` (name, sha256 and size of every file) is committed last; a
digest without a manifest does not exist. Readers verify every file's sha256
against the manifest before use.

Artifacts are shared by every stack that builds the same digest, so nothing
here deletes one: `pulumi destroy` forgets a stack's reference and garbage
collection is the store's job (an S3 lifecycle rule on the prefix, or `rm` of
old digests in the local directory). See docs/artifacts.md.

No Pulumi and no torch imports: the dynamic provider runs this in the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MANIFEST = "manifest.json"
BUILDS = "builds"  # build key -> digest index, so an unchanged build is a cache hit
CHUNK = 1 << 20


class ArtifactStoreError(RuntimeError):
    """A store operation that failed, naming the store, the operation and why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(digest: str, files: dict[str, Path]) -> dict[str, Any]:
    if "model.onnx" not in files:
        raise ArtifactStoreError("an artifact needs a model.onnx")
    entries = {name: {"sha256": sha256_file(p), "size": p.stat().st_size} for name, p in sorted(files.items())}
    if entries["model.onnx"]["sha256"] != digest:
        raise ArtifactStoreError(f"model.onnx has sha256 {entries['model.onnx']['sha256']}, not the digest {digest}")
    return {"digest": digest, "files": entries}


def verify_dir(directory: Path, manifest: dict[str, Any]) -> None:
    """Raise unless every file in the manifest is in `directory` with its sha256."""
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ArtifactStoreError(f"{path}: missing from artifact {manifest['digest']}")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ArtifactStoreError(f"{path}: sha256 {actual} does not match the manifest ({entry['sha256']})")


class ArtifactStore(Protocol):
    def uri(self, digest: str) -> str:
        """Where an artifact lives, as shown to users."""
        ...

    def manifest(self, digest: str) -> dict[str, Any] | None:
        """The committed manifest, or None when the digest is not published."""
        ...

    def publish(self, digest: str, files: dict[str, Path]) -> str:
        """Publish atomically (idempotent for an already published digest); return the URI."""
        ...

    def fetch(self, digest: str, dest: Path) -> Path:
        """Copy a published artifact into dest (a new directory), verified; return dest."""
        ...

    def read(self, digest: str, name: str) -> bytes:
        """One file of a published artifact, verified against the manifest."""
        ...

    def lookup(self, build_key: str) -> str | None:
        """The digest an earlier build with these inputs published, if any."""
        ...

    def record(self, build_key: str, digest: str) -> None:
        """Remember which digest a build key produced (after the artifact is published)."""
        ...


@dataclass(frozen=True)
class LocalStore:
    """A directory: <root>/<digest>/{files..., manifest.json}, made visible by one rename."""

    root: Path

    def uri(self, digest: str) -> str:
        return str(self.root / digest)

    def manifest(self, digest: str) -> dict[str, Any] | None:
        path = self.root / digest / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None

    def publish(self, digest: str, files: dict[str, Path]) -> str:
        final = self.root / digest
        if self.manifest(digest) is not None:
            return self.uri(digest)
        manifest = build_manifest(digest, files)
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_staging()
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=self.root))
        try:
            for name, src in files.items():
                shutil.copyfile(src, staging / name)
            verify_dir(staging, manifest)
            _write_synced(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
            _fsync_dir(staging)
            try:
                os.rename(staging, final)  # atomic: the digest appears complete or not at all
            except OSError:
                if self.manifest(digest) is None:  # not a concurrent publish of the same digest
                    raise
            _fsync_dir(self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.uri(digest)

    def _sweep_stale_staging(self, max_age_s: float = 3600.0) -> None:
        """Remove staging left by a killed publisher; readers never see staging, so this is only tidying."""
        cutoff = time.time() - max_age_s
        for path in self.root.glob(".*-*"):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)

    def fetch(self, digest: str, dest: Path) -> Path:
        manifest = self.manifest(digest)
        if manifest is None:
            raise ArtifactStoreError(f"{self.uri(digest)}: artifact {digest} is not published")
        dest.mkdir(parents=True, exist_ok=False)
        for name in manifest["files"]:
            shutil.copyfile(self.root / digest / name, dest / name)
        verify_dir(dest, manifest)
        return dest

    def read(self, digest: str, name: str) -> bytes:
        manifest = _published_manifest(self, digest, name)
        data = (self.root / digest / name).read_bytes()
        _check_bytes(data, manifest, name, self.uri(digest))
        return data

    def lookup(self, build_key: str) -> str | None:
        path = self.root / BUILDS / f"{build_key}.json"
        return str(json.loads(path.read_text())["digest"]) if path.is_file() else None

    def record(self, build_key: str, digest: str) -> None:
        builds = self.root / BUILDS
        builds.mkdir(parents=True, exist_ok=True)
        tmp = builds / f".{build_key}.{os.getpid()}.tmp"
        _write_synced(tmp, json.dumps({"digest": digest}))
        os.replace(tmp, builds / f"{build_key}.json")


def _published_manifest(store: ArtifactStore, digest: str, name: str) -> dict[str, Any]:
    manifest = store.manifest(digest)
    if manifest is None or name not in manifest["files"]:
        raise ArtifactStoreError(f"{store.uri(digest)}: no {name} in artifact {digest}")
    return manifest


def _check_bytes(data: bytes, manifest: dict[str, Any], name: str, where: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest["files"][name]["sha256"]:
        raise ArtifactStoreError(f"{where}/{name}: sha256 {actual} does not match the manifest")


def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# S3 error codes that no retry can fix: fail at once, naming the bucket and operation.
PERMANENT = {"NoSuchBucket": "the bucket does not exist", "AccessDenied": "access denied",
             "AllAccessDisabled": "access denied", "InvalidAccessKeyId": "the access key is not valid",
             "SignatureDoesNotMatch": "the secret key does not match"}


@dataclass(frozen=True)
class S3Store:
    """s3://bucket/prefix/<digest>/{files..., manifest.json}; the manifest is put last.

    A single PUT is atomic in S3, so a failed upload leaves no object; objects
    of an artifact without its manifest are invisible to readers and are
    overwritten by the next publish. Transient errors are retried by botocore
    (standard mode, with backoff).
    """

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint: str | None = None
    max_attempts: int = 5

    @classmethod
    def from_uri(cls, uri: str, region: str | None = None, endpoint: str | None = None) -> S3Store:
        rest = uri.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ArtifactStoreError(f"{uri}: expected s3://bucket[/prefix]")
        return cls(bucket=bucket, prefix=prefix.strip("/"), region=region, endpoint=endpoint)

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": self.max_attempts})
        return boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint, config=config)

    def _key(self, digest: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, digest, name) if p)

    def uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self._key(digest, '')}".rstrip("/")

    def _call(self, operation: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            why = PERMANENT.get(code, f"{code}: {exc}")
            raise ArtifactStoreError(f"s3://{self.bucket}: {operation} failed: {why}") from None
        except BotoCoreError as exc:
            raise ArtifactStoreError(f"s3://{self.bucket}: {operation} failed: {exc}") from None

    def manifest(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            body = self._client().get_object(Bucket=self.bucket, Key=self._key(digest, MANIFEST))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            code = exc.response.get("Error", {}).get("Code", "")
            raise ArtifactStoreError(
                f"s3://{self.bucket}: reading {self._key(digest, MANIFEST)} failed: {PERMANENT.get(code, code)}"
            ) from None
        manifest: dict[str, Any] = json.loads(body)
        return manifest

    def publish(self, digest: str, files: dict[str, Path]) -> str:
        if self.manifest(digest) is not None:
            return self.uri(digest)
        manifest = build_manifest(digest, files)
        client = self._client()
        for name, src in sorted(files.items()):
            key = self._key(digest, name)
            with src.open("rb") as body:
                self._call(f"upload of {key}", client.put_object, Bucket=self.bucket, Key=key, Body=body,
                           ChecksumAlgorithm="SHA256")
            # Verify what S3 holds before the manifest makes it visible.
            head = self._call(f"check of {key}", client.head_object, Bucket=self.bucket, Key=key,
                              ChecksumMode="ENABLED")
            if head["ContentLength"] != manifest["files"][name]["size"]:
                raise ArtifactStoreError(f"s3://{self.bucket}/{key}: size {head['ContentLength']} after upload, "
                                         f"expected {manifest['files'][name]['size']}")
        key = self._key(digest, MANIFEST)
        self._call(f"commit of {key}", client.put_object, Bucket=self.bucket, Key=key,
                   Body=json.dumps(manifest, indent=2, sort_keys=True).encode(), ContentType="application/json")
        return self.uri(digest)

    def fetch(self, digest: str, dest: Path) -> Path:
        manifest = self.manifest(digest)
        if manifest is None:
            raise ArtifactStoreError(f"{self.uri(digest)}: artifact {digest} is not published")
        client = self._client()
        dest.mkdir(parents=True, exist_ok=False)
        for name in manifest["files"]:
            key = self._key(digest, name)
            self._call(f"download of {key}", client.download_file, Bucket=self.bucket, Key=key,
                       Filename=str(dest / name))
        verify_dir(dest, manifest)
        return dest

    def read(self, digest: str, name: str) -> bytes:
        manifest = _published_manifest(self, digest, name)
        key = self._key(digest, name)
        data: bytes = self._call(f"download of {key}", self._client().get_object, Bucket=self.bucket,
                                 Key=key)["Body"].read()
        _check_bytes(data, manifest, name, self.uri(digest))
        return data

    def lookup(self, build_key: str) -> str | None:
        from botocore.exceptions import ClientError

        key = self._key(BUILDS, f"{build_key}.json")
        try:
            body = self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise ArtifactStoreError(f"s3://{self.bucket}: reading {key} failed: {exc}") from None
        return str(json.loads(body)["digest"])

    def record(self, build_key: str, digest: str) -> None:
        key = self._key(BUILDS, f"{build_key}.json")
        self._call(f"write of {key}", self._client().put_object, Bucket=self.bucket, Key=key,
                   Body=json.dumps({"digest": digest}).encode(), ContentType="application/json")


def open_store(uri: str, base_dir: Path, region: str | None = None, endpoint: str | None = None) -> ArtifactStore:
    """The store for a config value: s3://bucket/prefix, or a directory relative to base_dir."""
    if uri.startswith("s3://"):
        return S3Store.from_uri(uri, region=region, endpoint=endpoint)
    path = Path(uri)
    return LocalStore(path if path.is_absolute() else base_dir / path)
