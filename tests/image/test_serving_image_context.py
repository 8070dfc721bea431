"""ServingImage's build context: fetched from the artifact store (verified), laid out once per digest."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from artifacts.store import ArtifactStoreError, LocalStore
from components.serving_image import ServingImageArgs, context_digest, image_tag, prepare_context
from serving.context import source_key

REPO = Path(__file__).resolve().parents[2]


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
    assert Path(context).name == f"{digest[:16]}-cpu-{source_key()}"
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
    assert f"{digest[:16]}-gpu-" in gpu and gpu != cpu
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


def test_a_wheelhouse_gets_its_own_context_with_its_wheels(tmp_path):
    digest = publish_artifact(tmp_path / "store")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"PK")
    plain = prepare_context(args_for(tmp_path), digest)
    offline = Path(prepare_context(args_for(tmp_path, wheelhouse=str(wheels)), digest))
    assert str(offline) != plain and (offline / "wheels" / "demo-1.0-py3-none-any.whl").is_file()
    (wheels / "demo-1.1-py3-none-any.whl").write_bytes(b"PK")  # a new wheel: a new context, not a stale one
    newer = Path(prepare_context(args_for(tmp_path, wheelhouse=str(wheels)), digest))
    assert newer != offline and (newer / "wheels" / "demo-1.1-py3-none-any.whl").is_file()


def test_prepare_context_needs_no_project_dir_on_sys_path_when_it_runs(tmp_path):
    # The engine's shim runs __main__ with runpy.run_path(project dir), which takes the directory off
    # sys.path again when the module body returns; applies (prepare_context among them) run after that.
    # An import of a project module inside prepare_context failed there: "No module named 'serving'".
    digest = publish_artifact(tmp_path / "store")
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from components.serving_image import ServingImageArgs, prepare_context
sys.path.remove({str(REPO)!r})
args = ServingImageArgs(repository="r/m", model_digest="x", store_uri={str(tmp_path / "store")!r},
                        project_dir={str(tmp_path)!r})
print(prepare_context(args, {digest!r}))
"""
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (Path(proc.stdout.strip()) / "model" / "model.onnx").is_file()


def test_the_context_digest_is_kept_beside_it_and_taken_again_when_a_file_changes(tmp_path):
    digest = publish_artifact(tmp_path / "store")
    context = Path(prepare_context(args_for(tmp_path), digest))
    first = context_digest(context)
    kept = context.with_name(context.name + ".digest")
    assert json.loads(kept.read_text())["sha256"] == first and not (context / kept.name).exists()
    assert context_digest(context) == first  # from the kept digest: the files' sizes and mtimes match
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "sha256": "0" * 64}))
    assert context_digest(context) == "0" * 64  # (it is the kept one that was read)
    (context / "serving" / "app.py").write_text("# changed server code\n")
    assert context_digest(context) not in (first, "0" * 64)
    kept.write_text("not json")
    assert context_digest(context) == context_digest(context)
