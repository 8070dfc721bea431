"""ServingImage's build context: fetched from the artifact store (verified), laid out once per digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from components.artifact_store import ArtifactStoreError, LocalStore
from components.serving_image import ServingImageArgs, image_tag, prepare_context


def publish_artifact(store_dir, payload=b"not really onnx"):
    build = store_dir.parent / "build"
    build.mkdir()
    digest = hashlib.sha256(payload).hexdigest()
    (build / "model.onnx").write_bytes(payload)
    (build / "report.json").write_text(json.dumps({"name": "tiny", "digest": digest}))
    LocalStore(store_dir).publish(digest, {"model.onnx": build / "model.onnx", "report.json": build / "report.json"})
    return digest


def args_for(tmp_path, **kw):
    return ServingImageArgs(repository="localhost:5001/tiny", model_digest="x", store_uri=str(tmp_path / "store"),
                            project_dir=str(tmp_path), **kw)


def test_context_holds_server_dockerfile_and_the_verified_model(tmp_path):
    digest = publish_artifact(tmp_path / "store")
    context = prepare_context(args_for(tmp_path), digest)
    assert context.endswith(f"{digest[:16]}-cpu")
    files = {p.relative_to(context).as_posix() for p in Path(context).rglob("*") if p.is_file()}
    assert {"Dockerfile", "requirements.txt", "serving/__main__.py", "model/model.onnx", "model/report.json"} <= files
    assert not any(name.startswith(("components/", "optimize/", "tests/")) for name in files)


def test_context_is_reused_for_the_same_digest(tmp_path):
    digest = publish_artifact(tmp_path / "store")
    first = prepare_context(args_for(tmp_path), digest)
    (tmp_path / "store").rename(tmp_path / "gone")  # a reuse must not need the store
    assert prepare_context(args_for(tmp_path), digest) == first


def test_gpu_variant_gets_its_own_context_and_tag(tmp_path):
    digest = publish_artifact(tmp_path / "store")
    gpu = prepare_context(args_for(tmp_path, gpu=True), digest)
    cpu = prepare_context(args_for(tmp_path), digest)
    assert gpu.endswith("-gpu") and gpu != cpu
    assert image_tag("r/m", digest, gpu, "gpu").startswith(f"r/m:{digest[:12]}-")
    assert image_tag("r/m", digest, gpu, "gpu").endswith("-gpu")


def test_tag_changes_with_the_server_code_not_only_the_model(tmp_path):
    digest = publish_artifact(tmp_path / "store")
    context = Path(prepare_context(args_for(tmp_path), digest))
    before = image_tag("r/m", digest, context, "cpu")
    assert image_tag("r/m", digest, context, "cpu") == before  # stable for the same content
    (context / "serving" / "app.py").write_text("# changed server code\n")
    after = image_tag("r/m", digest, context, "cpu")
    assert after != before and after.startswith(f"r/m:{digest[:12]}-")


def test_tampered_artifact_is_refused(tmp_path):
    digest = publish_artifact(tmp_path / "store")
    (tmp_path / "store" / digest / "model.onnx").write_bytes(b"evil")
    with pytest.raises(ArtifactStoreError, match="does not match"):
        prepare_context(args_for(tmp_path), digest)
    assert not (tmp_path / ".modelstack" / "models" / digest).exists()


def test_bad_args_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="platform"):
        args_for(tmp_path, platform="windows/amd64")
