"""Promotion of a tested artifact into another store, by digest: verified, copied once, never altered;
local directories and S3 (moto's real server), and through the engine's provider process."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import boto3
import grpc
import pytest

from artifacts.promote import PromotionError, copy_image, promote_artifact, source_store_uri
from artifacts.store import LocalStore, S3Store
from components.promotion import PromotedModelProvider
from tests.artifacts.test_artifact_store import moto_endpoint  # noqa: F401  (a fixture)
from tests.processes import start_docker_registry, stop
from tests.provider.engine_provider import EngineProvider

ROOT = Path(__file__).resolve().parents[2]


def published(store, tmp_path: Path) -> str:
    build = tmp_path / "build"
    build.mkdir()
    payload = b"onnx-bytes-of-a-tested-model"
    digest = hashlib.sha256(payload).hexdigest()
    (build / "model.onnx").write_bytes(payload)
    (build / "report.json").write_text(json.dumps({"digest": digest}))
    store.publish(digest, {"model.onnx": build / "model.onnx", "report.json": build / "report.json"})
    return digest


def props(digest: str, source_uri: str, store_uri: str, **extra) -> dict:
    return {"modelName": "digits", "digest": digest, "sourceArtifactUri": source_uri, "storeUri": store_uri,
            "projectDir": str(ROOT), "promotedFrom": "organization/modelstack/dev", **extra}


def test_another_store_gets_a_verified_copy_once(tmp_path):
    source = LocalStore(tmp_path / "dev-store")
    digest = published(source, tmp_path)
    target = tmp_path / "prod-store"
    first = promote_artifact(props(digest, source.uri(digest), str(target)))
    assert first["copied"] is True and first["artifactUri"] == str(target / digest)
    assert LocalStore(target).manifest(digest) == source.manifest(digest)
    second = promote_artifact(props(digest, source.uri(digest), str(target)))
    assert second["copied"] is False  # idempotent: present by digest, nothing copied


def test_the_same_store_is_only_verified(tmp_path):
    store = LocalStore(tmp_path / "store")
    digest = published(store, tmp_path)
    out = promote_artifact(props(digest, store.uri(digest), str(tmp_path / "store")))
    assert out["copied"] is False and out["reportDigest"] == digest


def test_an_altered_source_is_refused_and_nothing_is_copied(tmp_path):
    source = LocalStore(tmp_path / "dev-store")
    digest = published(source, tmp_path)
    (tmp_path / "dev-store" / digest / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(Exception, match=r"model\.onnx"):
        promote_artifact(props(digest, source.uri(digest), str(tmp_path / "prod-store")))
    assert LocalStore(tmp_path / "prod-store").manifest(digest) is None


def test_an_uri_that_does_not_end_in_its_digest_is_refused():
    with pytest.raises(PromotionError, match="does not end in its digest"):
        source_store_uri("s3://bucket/models/other", "ab" * 32)
    assert source_store_uri("s3://bucket/models/" + "ab" * 32, "ab" * 32) == "s3://bucket/models"


def test_s3_to_s3_by_digest(moto_endpoint, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # moto accepts any; placeholders, not secrets
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_endpoint)
    for bucket in ("dev-models", "prod-models"):
        client.create_bucket(Bucket=bucket)
    source = S3Store.from_uri("s3://dev-models/m", region="us-east-1", endpoint=moto_endpoint)
    digest = published(source, tmp_path)
    extra = {"storeRegion": "us-east-1", "storeEndpoint": moto_endpoint}
    out = promote_artifact(props(digest, source.uri(digest), "s3://prod-models/m", **extra))
    assert out["copied"] is True and out["artifactUri"] == f"s3://prod-models/m/{digest}"
    target = S3Store.from_uri("s3://prod-models/m", region="us-east-1", endpoint=moto_endpoint)
    assert target.read(digest, "model.onnx") == b"onnx-bytes-of-a-tested-model"
    assert promote_artifact(props(digest, source.uri(digest), "s3://prod-models/m", **extra))["copied"] is False


def test_the_engines_provider_process_promotes_and_reports_a_bad_artifact_in_one_line(tmp_path):
    source = LocalStore(tmp_path / "dev-store")
    digest = published(source, tmp_path)
    engine = EngineProvider(cwd=tmp_path, provider=PromotedModelProvider())
    try:
        outs = engine.create(props(digest, source.uri(digest), str(tmp_path / "prod-store")))
        assert outs["copied"] is True
        with pytest.raises(grpc.RpcError) as failed:
            engine.create(props("0" * 64, str(tmp_path / "dev-store" / ("0" * 64)), str(tmp_path / "other")))
    finally:
        engine.close()
    details = failed.value.details()
    assert "is not published" in details and "Traceback" not in details and "\n" not in details


def oci_layout(root: Path) -> str:
    """A one-layer OCI image layout on disk (what skopeo can push); returns its manifest digest."""

    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("model/README")
        payload = b"a tested model\n"
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    layer = gzip.compress(tar.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()
    config = blob(json.dumps({"architecture": "amd64", "os": "linux",
                              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(layer)}],
    }).encode()
    desc = blob(manifest)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **desc,
         "annotations": {"org.opencontainers.image.ref.name": "tested"}}]}))
    return str(desc["digest"])


@pytest.fixture
def two_registries(tmp_path):
    """Debian's docker-registry twice on 127.0.0.1, stopped by pid."""
    started = [start_docker_registry(tmp_path / name) for name in ("dev", "prod")]
    try:
        yield [host for _, host in started]
    finally:
        for proc, _ in started:
            stop(proc)


def test_an_image_is_copied_to_another_registry_under_the_same_digest(two_registries, tmp_path):
    dev, prod = two_registries
    digest = oci_layout(tmp_path / "layout")
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:tested",
                    f"docker://{dev}/modelstack/digits:abc123"], check=True, capture_output=True)
    out = copy_image({"sourceRepository": f"{dev}/modelstack/digits", "digest": digest,
                      "repository": f"{prod}/modelstack/digits", "tag": "abc123"})
    assert out["ref"] == f"{prod}/modelstack/digits:abc123@{digest}"
    again = copy_image({"sourceRepository": f"{dev}/modelstack/digits", "digest": digest,
                        "repository": f"{prod}/modelstack/digits", "tag": "abc123"})
    assert again["ref"] == out["ref"]  # idempotent
    with pytest.raises(PromotionError, match="image copy failed"):
        copy_image({"sourceRepository": f"{dev}/modelstack/digits", "digest": "sha256:" + "0" * 64,
                    "repository": f"{prod}/modelstack/digits", "tag": "missing"})
