"""Promotion of a tested artifact into another store, by digest: verified, copied once, never altered;
local directories and S3 (moto's real server), and through the engine's provider process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import grpc
import pytest

from artifacts.promote import PromotionError, promote_artifact, source_store_uri
from artifacts.store import LocalStore, S3Store
from components.promotion import PromotedModelProvider
from tests.artifacts.test_artifact_store import moto_endpoint  # noqa: F401  (a fixture)
from tests.provider.test_optimized_model_provider import EngineProvider

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
