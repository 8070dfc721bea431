"""The artifact store, local and S3 (moto's real server on 127.0.0.1): atomic publish, verified reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from moto.server import ThreadedMotoServer

from artifacts.store import ArtifactStoreError, LocalStore, S3Store, open_store


def make_artifact(directory: Path, payload: bytes = b"onnx-bytes") -> tuple[str, dict[str, Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / "model.onnx"
    model.write_bytes(payload)
    report = directory / "report.json"
    digest = hashlib.sha256(payload).hexdigest()
    report.write_text(json.dumps({"digest": digest}))
    return digest, {"model.onnx": model, "report.json": report}


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch, request):
    # moto accepts any credentials; these are placeholders, not secrets.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"artifacts-{request.node.name.lower().replace('_', '-')[:40]}"
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=bucket)
    store = S3Store.from_uri(f"s3://{bucket}/models", region="us-east-1", endpoint=moto_endpoint)
    return store, client


def test_local_publish_then_fetch_verifies(tmp_path):
    digest, files = make_artifact(tmp_path / "build")
    store = LocalStore(tmp_path / "store")
    assert store.manifest(digest) is None
    uri = store.publish(digest, files)
    assert Path(uri) == tmp_path / "store" / digest
    out = store.fetch(digest, tmp_path / "fetched")
    assert (out / "model.onnx").read_bytes() == b"onnx-bytes"
    assert store.manifest(digest)["files"]["model.onnx"]["sha256"] == digest
    assert [p.name for p in (tmp_path / "store").iterdir()] == [digest]  # no staging left behind


def test_local_publish_is_idempotent(tmp_path):
    digest, files = make_artifact(tmp_path / "build")
    store = LocalStore(tmp_path / "store")
    first = store.publish(digest, files)
    mtime = (Path(first) / "manifest.json").stat().st_mtime_ns
    assert store.publish(digest, files) == first
    assert (Path(first) / "manifest.json").stat().st_mtime_ns == mtime


def test_local_fetch_rejects_a_tampered_file(tmp_path):
    digest, files = make_artifact(tmp_path / "build")
    store = LocalStore(tmp_path / "store")
    store.publish(digest, files)
    (tmp_path / "store" / digest / "model.onnx").write_bytes(b"evil")
    with pytest.raises(ArtifactStoreError, match="does not match the manifest"):
        store.fetch(digest, tmp_path / "fetched")


def test_digest_must_be_the_model_sha256(tmp_path):
    _, files = make_artifact(tmp_path / "build")
    with pytest.raises(ArtifactStoreError, match="not the digest"):
        LocalStore(tmp_path / "store").publish("0" * 64, files)
    assert not (tmp_path / "store" / ("0" * 64)).exists()


def test_s3_publish_read_back_verify(s3, tmp_path):
    store, client = s3
    digest, files = make_artifact(tmp_path / "build")
    uri = store.publish(digest, files)
    assert uri == f"s3://{store.bucket}/models/{digest}"
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=store.bucket)["Contents"])
    assert keys == [f"models/{digest}/{n}" for n in ("manifest.json", "model.onnx", "report.json")]
    out = store.fetch(digest, tmp_path / "fetched")
    assert (out / "model.onnx").read_bytes() == b"onnx-bytes"


def test_s3_fetch_rejects_a_tampered_object(s3, tmp_path):
    store, client = s3
    digest, files = make_artifact(tmp_path / "build")
    store.publish(digest, files)
    client.put_object(Bucket=store.bucket, Key=f"models/{digest}/model.onnx", Body=b"evil")
    with pytest.raises(ArtifactStoreError, match="does not match the manifest"):
        store.fetch(digest, tmp_path / "fetched")


def test_s3_failed_upload_midway_leaves_no_manifest(s3, tmp_path, monkeypatch):
    store, _ = s3
    digest, files = make_artifact(tmp_path / "build")
    real_client = store._client

    def failing_client():
        c = real_client()

        def fail_on_report(request, **_):
            if request.url.endswith("/report.json"):
                raise OSError("connection reset while uploading report.json")

        c.meta.events.register("before-send.s3.PutObject", fail_on_report)
        return c

    monkeypatch.setattr(S3Store, "_client", lambda self: failing_client())
    with pytest.raises(OSError, match=r"report\.json"):
        store.publish(digest, files)
    assert store.manifest(digest) is None  # readers see nothing
    monkeypatch.undo()
    store.publish(digest, files)  # a re-run completes the artifact
    assert store.fetch(digest, tmp_path / "fetched").is_dir()


def test_s3_transient_errors_are_retried(s3, tmp_path, monkeypatch):
    store, _ = s3
    digest, files = make_artifact(tmp_path / "build")
    real_client = store._client
    failures = {"left": 2}

    def flaky_client():
        c = real_client()

        def flaky(request, **_):
            if failures["left"] > 0:
                failures["left"] -= 1
                raise EndpointConnectionError(endpoint_url=request.url)

        c.meta.events.register("before-send.s3.PutObject", flaky)
        return c

    monkeypatch.setattr(S3Store, "_client", lambda self: flaky_client())
    store.publish(digest, files)
    assert failures["left"] == 0
    assert store.manifest(digest) is not None


def test_s3_missing_bucket_names_bucket_and_operation(moto_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3Store.from_uri("s3://no-such-bucket/x", region="us-east-1", endpoint=moto_endpoint)
    digest, files = make_artifact(tmp_path / "build")
    with pytest.raises(ArtifactStoreError, match=r"s3://no-such-bucket: .*failed: the bucket does not exist"):
        store.publish(digest, files)


def test_open_store_picks_the_backend(tmp_path):
    assert isinstance(open_store("s3://b/p", tmp_path), S3Store)
    local = open_store(".modelstack/artifacts", tmp_path)
    assert isinstance(local, LocalStore) and local.root == tmp_path / ".modelstack/artifacts"


def test_stale_staging_of_a_killed_publisher_is_swept(tmp_path):
    import os
    import time

    store = LocalStore(tmp_path / "store")
    stale = tmp_path / "store" / ".abcdef012345-x1"
    fresh = tmp_path / "store" / ".abcdef012345-x2"
    for path in (stale, fresh):
        path.mkdir(parents=True)
        (path / "model.onnx").write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    digest, files = make_artifact(tmp_path / "build")
    store.publish(digest, files)
    assert not stale.exists()
    assert fresh.exists()  # may belong to a publisher still running
