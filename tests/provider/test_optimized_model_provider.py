"""The OptimizedModel dynamic provider with real builds: create/diff/update/delete, dill, SIGKILL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from artifacts.build import _outputs, build_key
from artifacts.store import LocalStore, sha256_file
from components.optimized_model import (
    OUTPUT_KEYS,
    PIPELINE_CODE,
    SYNTAX_CACHE,
    OptimizedModelProvider,
    pipeline_code_digest,
    tool_versions,
)
from tests.provider.engine_provider import EngineProvider
from tests.pulumi_harness import ROOT

FAST_BENCH = {"iterations": 5, "warmup": 1, "batch_sizes": [1]}
FP32 = {"name": "fp32-test", "quantize": {"mode": "none"}, "benchmark": FAST_BENCH}
INT8_LOOSE = {"name": "int8-loose", "quantize": {"mode": "dynamic_int8"},
              "gate": {"max_accuracy_drop": 1.0, "min_agreement": 0.0}, "benchmark": FAST_BENCH}
INT8_STRICT = {"name": "int8-strict", "quantize": {"mode": "dynamic_int8"}, "benchmark": FAST_BENCH}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A TorchScript MLP whose logits are close together, so int8 flips some argmaxes."""
    import torch

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    torch.jit.save(torch.jit.script(model), str(root / "model.pt"))
    x = np.random.default_rng(0).standard_normal((64, 16)).astype("float32")
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy().astype("int64")
    np.savez(root / "validation.npz", x=x, y=y)
    return root


def props_for(model_dir: Path, store: Path, recipe: dict) -> dict:
    return {
        "modelName": "tiny", "sourcePath": str(model_dir / "model.pt"),
        "sourceSha256": sha256_file(model_dir / "model.pt"), "factory": None, "recipe": recipe,
        "validationPath": str(model_dir / "validation.npz"),
        "validationSha256": sha256_file(model_dir / "validation.npz"),
        "calibrationPath": None, "calibrationSha256": None, "toolVersions": tool_versions(ROOT),
        "storeUri": str(store), "storeRegion": None, "storeEndpoint": None, "projectDir": str(ROOT),
    }


def test_create_diff_update_delete(tiny_model, tmp_path):
    provider = OptimizedModelProvider()
    store = tmp_path / "store"
    props = props_for(tiny_model, store, FP32)

    created = provider.create(props)
    outs = created.outs
    assert outs["cacheHit"] is False
    assert LocalStore(store).manifest(outs["digest"]) is not None
    assert outs["artifactUri"] == str(store / outs["digest"])
    assert outs["accuracyDelta"] == 0.0 and outs["agreement"] == 1.0
    # The task the gate judged it as (labelled data: a classifier) and every figure, for a promotion to judge.
    assert outs["task"] == "classification"
    assert outs["cosineMean"] == pytest.approx(1.0) and outs["cosineMin"] == pytest.approx(1.0)
    assert outs["relativeError"] == pytest.approx(0.0, abs=1e-5)
    assert outs["latencyP50Ms"] > 0 and outs["sizeRatio"] > 0

    same = provider.diff(created.id, outs, dict(props))
    assert same.changes is False

    news = props_for(tiny_model, store, INT8_LOOSE)
    changed = provider.diff(created.id, outs, news)
    assert changed.changes is True and not changed.replaces

    updated = provider.update(created.id, outs, news).outs
    assert updated["digest"] != outs["digest"]
    assert "recipe.quantize.mode: none -> dynamic_int8" in updated["lastChange"]
    assert updated["sizeRatio"] < outs["sizeRatio"]

    provider.delete(created.id, updated)
    # Shared, content-addressed: destroy forgets the reference, the artifacts stay for other stacks.
    assert LocalStore(store).manifest(outs["digest"]) is not None
    assert LocalStore(store).manifest(updated["digest"]) is not None


def test_diff_names_what_changed(tiny_model, tmp_path, capsys):
    provider = OptimizedModelProvider()
    olds = props_for(tiny_model, tmp_path, FP32)
    news = {**olds, "recipe": {**FP32, "quantize": {"mode": "static_int8"}}, "sourceSha256": "f" * 64}
    reasons = provider.diff("id", olds, news)
    assert reasons.changes is True
    # What `pulumi preview` prints (the engine shows a provider's stderr): one reason per line.
    printed = capsys.readouterr().err.splitlines()
    assert f"OptimizedModel {olds['modelName']}: rebuild because recipe.quantize.mode: none -> static_int8" in printed
    from artifacts.build import describe_changes

    lines = describe_changes(olds, news)
    assert "recipe.quantize.mode: none -> static_int8" in lines
    assert any(line.startswith("sourceSha256: ") and line.endswith("-> ffffffffffff") for line in lines)


def test_diff_ignores_paths_when_content_is_unchanged(tiny_model, tmp_path, capsys):
    olds = props_for(tiny_model, tmp_path, FP32)
    news = {**olds, "sourcePath": "elsewhere/model.pt", "projectDir": "/another/checkout"}
    assert OptimizedModelProvider().diff("id", olds, news).changes is False
    assert capsys.readouterr().err == ""  # a no-op preview stays quiet


def test_diff_is_cheap(tiny_model, tmp_path):
    provider = OptimizedModelProvider()
    olds = props_for(tiny_model, tmp_path, FP32)
    provider.diff("id", olds, dict(olds))  # warm imports
    start = time.perf_counter()
    for _ in range(20):
        provider.diff("id", olds, dict(olds))
    assert (time.perf_counter() - start) / 20 < 0.05


def test_cache_hit_reads_the_published_report(tiny_model, tmp_path):
    provider = OptimizedModelProvider()
    props = props_for(tiny_model, tmp_path / "store", FP32)
    cold = provider.create(props).outs
    warm = provider.create(dict(props)).outs
    assert warm["cacheHit"] is True
    assert warm["digest"] == cold["digest"] and warm["latencyP50Ms"] == cold["latencyP50Ms"]
    assert LocalStore(tmp_path / "store").lookup(build_key(props)) == cold["digest"]


def test_failed_gate_fails_create_and_publishes_nothing(tiny_model, tmp_path):
    store = tmp_path / "store"
    with pytest.raises(Exception, match="accuracy gate failed"):
        OptimizedModelProvider().create(props_for(tiny_model, store, INT8_STRICT))
    assert not store.exists() or not [p for p in store.iterdir() if not p.name.startswith(".")]


def test_source_changed_since_preview_is_refused(tiny_model, tmp_path):
    props = {**props_for(tiny_model, tmp_path / "store", FP32), "sourceSha256": "0" * 64}
    with pytest.raises(RuntimeError, match="changed since the plan was made"):
        OptimizedModelProvider().create(props)


def test_dill_round_trip_into_the_engines_provider_process_creates(tiny_model, tmp_path):
    engine = EngineProvider(cwd=tmp_path)
    try:
        outs = engine.create(props_for(tiny_model, tmp_path / "store", FP32))
    finally:
        engine.close()
    assert LocalStore(tmp_path / "store").manifest(outs["digest"]) is not None
    assert outs["cacheHit"] is False


def test_the_engines_provider_process_reports_a_missed_gate_in_one_line(tiny_model, tmp_path):
    # The engine's dynamic-provider server answers any exception with its traceback; a missed gate
    # reached `pulumi up` as one (seen under the real CLI). It must arrive as the gate's one line.
    engine = EngineProvider(cwd=tmp_path)
    try:
        with pytest.raises(grpc.RpcError) as failed:
            engine.create(props_for(tiny_model, tmp_path / "store", INT8_STRICT))
    finally:
        engine.close()
    details = failed.value.details()
    assert details.startswith("accuracy gate failed: ") and "nothing was published" in details
    assert "Traceback" not in details and "\n" not in details


def _published(store: Path) -> dict[str, dict]:
    """Digest -> manifest for every artifact a reader can see."""
    if not store.exists():
        return {}
    local = LocalStore(store)
    return {p.name: local.manifest(p.name) for p in store.iterdir()
            if not p.name.startswith(".") and p.name != "builds" and local.manifest(p.name)}


def test_sigkill_at_any_point_leaves_nothing_or_a_complete_artifact(tiny_model, tmp_path):
    store = tmp_path / "store"
    engine = EngineProvider(cwd=tmp_path)
    try:
        start = time.perf_counter()
        engine.create(props_for(tiny_model, store, FP32))
        cold = time.perf_counter() - start
    finally:
        engine.close()
    previous = _published(store)
    assert len(previous) == 1

    news = props_for(tiny_model, store, INT8_LOOSE)
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        engine = EngineProvider(cwd=tmp_path)
        try:
            engine.create_async(news)
            time.sleep(cold * fraction)
            engine.kill()
        finally:
            engine.close()
        seen = _published(store)
        # Either only the previous artifact, or that plus a complete new one: never a partial one.
        assert set(previous) <= set(seen) and len(seen) <= 2, seen
        for digest in seen:
            LocalStore(store).fetch(digest, tmp_path / f"check-{fraction}-{digest[:8]}")  # verifies every sha256

    engine = EngineProvider(cwd=tmp_path)
    try:
        outs = engine.create(news)
    finally:
        engine.close()
    assert set(_published(store)) == {*previous, outs["digest"]}


def test_outputs_carry_the_task_and_every_fidelity_figure():
    acc = {"agreement": 0.77, "delta": None, "cosine_mean": 0.999, "cosine_min": 0.99, "relative_error": 0.03}
    report = {"digest": "cd" * 32, "accuracy": acc, "fidelity": {"task": "embedding", "checks": []}}
    outs = _outputs({"modelName": "minilm"}, report, "s3://b/" + "cd" * 32, "ab" * 32, cache_hit=False)
    assert (outs["task"], outs["agreement"], outs["accuracyDelta"]) == ("embedding", 0.77, None)
    assert (outs["cosineMean"], outs["cosineMin"], outs["relativeError"]) == (0.999, 0.99, 0.03)
    assert set(OUTPUT_KEYS) <= set(outs)
    # A report from before builds were task-aware (a cache hit on an old artifact): no task, judged as before.
    old = _outputs({}, {"digest": "cd" * 32, "accuracy": {"agreement": 0.998, "delta": -0.002}}, "u", "k", True)
    assert old["task"] is None and old["cosineMean"] is None and old["agreement"] == 0.998


def pipeline_copy(root: Path) -> Path:
    """The pipeline's code (PIPELINE_CODE) copied into a project directory of its own."""
    for pattern in PIPELINE_CODE:
        for path in ROOT.glob(pattern):
            target = root / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return root


def test_the_pipeline_version_follows_its_behaviour_not_its_comments(tmp_path):
    project = pipeline_copy(tmp_path / "project")
    before = pipeline_code_digest(project)
    assert before == pipeline_code_digest(ROOT)
    fidelity = project / "optimize" / "fidelity.py"
    text = fidelity.read_text()
    # A comment, a blank line and a reworded docstring: the same code.
    fidelity.write_text(text.replace('"""How close', '# reviewed\n\n"""How, exactly, close', 1)
                        .replace("    \"\"\"Greedy CTC decoding", "    \"\"\"Greedy (best path) CTC decoding", 1))
    assert fidelity.read_text() != text and pipeline_code_digest(project) == before
    table = project / "policy" / "rules" / "gate_table.py"
    table.write_text(table.read_text().replace('"max_cer": 0.01,', '"max_cer": 0.02,', 1))  # a default moves
    changed = pipeline_code_digest(project)
    assert changed != before
    (project / SYNTAX_CACHE).unlink()  # the cache is a shortcut only
    assert pipeline_code_digest(project) == changed
    (project / SYNTAX_CACHE).write_text("{not json")
    assert pipeline_code_digest(project) == changed
    cached = json.loads((project / SYNTAX_CACHE).read_text())
    (project / SYNTAX_CACHE).write_text(json.dumps(dict.fromkeys(cached)))  # entries that are not digests
    assert pipeline_code_digest(project) == changed
