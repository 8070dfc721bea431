"""Whole builds through optimize.pipeline.build on tiny real models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from optimize.errors import GateFailed, OptimizeError
from optimize.pipeline import build
from optimize.recipe import ExportSpec, GateSpec, PruneSpec, QuantizeSpec
from optimize.report import sha256
from tests.optimize.conftest import LOOSE_GATE, fast_recipe, leftovers

FACTORY = "tests.optimize.models:build_mlp"


def _check_artifact(out, report, source):
    assert sorted(p.name for p in out.iterdir()) == ["chart.png", "model.onnx", "report.json", "summary.md"]
    assert json.loads((out / "report.json").read_text()) == report
    assert report["digest"] == sha256(out / "model.onnx")
    assert report["source_digest"] == sha256(source)
    assert report["size_bytes"] == {"source": source.stat().st_size, "optimized": (out / "model.onnx").stat().st_size}
    assert report["inputs"][0]["shape"][0] is None
    # torch sources get a stable output name; an ONNX source keeps its own.
    assert report["outputs"][0]["name"] == ("logits" if source.suffix == ".onnx" else "output")
    for engine in ("baseline", "optimized"):
        for b in ("b1", "b4"):
            lat = report["latency_ms"][engine][b]
            assert 0 < lat["p50"] <= lat["p99"]
    assert set(report["versions"]) >= {"torch", "onnx", "onnxruntime", "python", "modelstack"}
    # The test runner's own peak when built in-process: bounded in a process of its own by test_cli.py.
    assert report["peak_rss_bytes"] > 0
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("torchscript", "dynamic_int8"),
        ("exported_program", "static_int8"),
        ("state_dict", "none"),
        ("onnx", "dynamic_int8"),
        ("torchscript", "fp16"),
    ],
)
def test_each_source_format_builds(mlp, tmp_path, fmt, mode):
    out = tmp_path / "artifact"
    recipe = fast_recipe(quantize=QuantizeSpec(mode=mode))
    report = build(mlp[fmt], recipe, out, mlp["validation"], mlp["calibration"], factory=FACTORY)
    _check_artifact(out, report, mlp[fmt])
    acc = report["accuracy"]
    assert acc["baseline"] > 0.9 and acc["agreement"] >= 0.95
    assert acc["delta"] == pytest.approx(acc["optimized"] - acc["baseline"])
    assert report["source_format"] == fmt
    assert report["recipe"] == recipe.to_dict()
    assert report["name"] == "model" if fmt != "state_dict" else report["name"] == "state"
    assert leftovers(tmp_path, "artifact") == ["artifact"]


def test_prune_then_int8_reports_sparsity_and_latency(cnn, tmp_path):
    out = tmp_path / "pruned"
    recipe = fast_recipe(prune=PruneSpec(method="global_unstructured", amount=0.5))
    report = build(cnn["torchscript"], recipe, out, cnn["validation"], cnn["calibration"], name="Tiny_CNN v2")
    assert report["name"] == "tiny-cnn-v2"
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
    pruning = report["pruning"]
    assert pruning["latency"]["p50_ms_dense"] > 0 and "dense" in pruning["latency"]["note"]
    assert report["accuracy"]["delta"] >= -0.05


def test_same_inputs_give_the_same_digest(mlp, tmp_path):
    recipe = fast_recipe(quantize=QuantizeSpec(mode="static_int8"))
    a = build(mlp["exported_program"], recipe, tmp_path / "a", mlp["validation"], mlp["calibration"])
    b = build(mlp["exported_program"], recipe, tmp_path / "b", mlp["validation"], mlp["calibration"])
    assert a["digest"] == b["digest"]


def test_rebuild_replaces_the_directory(mlp, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    build(mlp["onnx"], fast_recipe(), out, mlp["validation"])
    assert not (out / "stale.txt").exists() and (out / "model.onnx").is_file()
    assert leftovers(tmp_path, "art") == ["art"]


def test_without_validation_data_needs_shapes_and_skips_the_gate(mlp, tmp_path):
    with pytest.raises(OptimizeError, match="no example inputs"):
        build(mlp["torchscript"], fast_recipe(), tmp_path / "x")
    recipe = fast_recipe(export=ExportSpec(input_shapes={"x": (16,)}))
    report = build(mlp["torchscript"], recipe, tmp_path / "x")
    assert report["gate"]["checked"] is False and report["accuracy"]["baseline"] is None


def test_gate_failure_publishes_nothing(mlp, tmp_path):
    # Zeroing 97% of the weights wrecks the model; the baseline is the unpruned original.
    recipe = fast_recipe(prune=PruneSpec(method="global_unstructured", amount=0.97), gate=GateSpec())
    with pytest.raises(GateFailed, match=r"accuracy gate failed: .*top-1 accuracy dropped .* nothing was published"):
        build(mlp["torchscript"], recipe, tmp_path / "gated", mlp["validation"])
    assert leftovers(tmp_path, "gated") == []


def _bad(tmp_path, **arrays):
    path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("truncated_model", "corrupt|truncated|unknown format"),
        ("labels_out_of_range", r"model output shape \(2, 4\) does not match the validation labels"),
        ("empty_calibration", "calibration data .* is empty"),
        ("wrong_input_shape", "shape mismatch: the model rejects input 'x' \\[2, 9\\]"),
        ("recipe_shape_mismatch", r"shape mismatch: recipe export.input_shapes\['x'\] is \[9\]"),
        ("static_without_calibration", "needs a calibration set"),
        ("missing_model", "does not exist"),
        ("prune_onnx", "prune and distill need a torch source"),
    ],
)
def test_bad_input_fails_fast_and_leaves_nothing(mlp, tmp_path, case, match):
    x, y = np.load(mlp["validation"])["x"], np.load(mlp["validation"])["y"]
    model, recipe, val, cal = mlp["torchscript"], fast_recipe(), mlp["validation"], None
    work = tmp_path / "inputs"
    work.mkdir()
    if case == "truncated_model":
        model = work / "cut.pt"
        model.write_bytes(mlp["torchscript"].read_bytes()[:3000])
    elif case == "labels_out_of_range":
        val = _bad(work, x=x, y=y * 3)
    elif case == "empty_calibration":
        recipe, cal = fast_recipe(quantize=QuantizeSpec(mode="static_int8")), _bad(work, x=x[:0])
    elif case == "wrong_input_shape":
        val = _bad(work, x=np.zeros((10, 9), np.float32), y=y[:10])
    elif case == "recipe_shape_mismatch":
        recipe = fast_recipe(export=ExportSpec(input_shapes={"x": (9,)}))
    elif case == "static_without_calibration":
        recipe = fast_recipe(quantize=QuantizeSpec(mode="static_int8"))
    elif case == "missing_model":
        model = work / "nope.pt"
    elif case == "prune_onnx":
        model, recipe = mlp["onnx"], fast_recipe(prune=PruneSpec(method="global_unstructured", amount=0.5))
    with pytest.raises(OptimizeError, match=match) as err:
        build(model, recipe, tmp_path / "out", val, cal)
    assert "\n" not in str(err.value)
    assert leftovers(tmp_path, "out") == []


def test_multi_input_model(tmp_path):
    import torch

    from tests.optimize.models import TwoInputs

    torch.manual_seed(0)
    model = TwoInputs().eval()
    ex = (torch.randn(2, 16), torch.randn(2, 8))
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(
        torch.export.export(model, ex, dynamic_shapes=({0: batch}, {0: batch})), str(tmp_path / "two.pt2")
    )
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "v.npz", left=rng.standard_normal((32, 16)).astype(np.float32),
             right=rng.standard_normal((32, 8)).astype(np.float32))  # fmt: skip
    report = build(
        tmp_path / "two.pt2", fast_recipe(quantize=QuantizeSpec(mode="none")), tmp_path / "o", tmp_path / "v.npz"
    )
    assert [i["name"] for i in report["inputs"]] == ["left", "right"]
    assert report["accuracy"]["agreement"] == 1.0 and report["accuracy"]["max_abs_error"] < 1e-4


def test_a_time_major_sequence_model_from_a_training_checkpoint_builds(tmp_path):
    """A BiLSTM whose output is [T, batch, C], saved as training scripts save it: validated per step
    along the class axis, with the batch joined along the output's own batch axis."""
    import torch

    from tests.optimize import models

    model = models.build_time_major_tagger()
    checkpoint = tmp_path / "tagger.pt"
    torch.save({"model_state_dict": model.state_dict(), "epoch": 12, "best_val_loss": 0.31}, checkpoint)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, models.SEQ_STEPS, models.SEQ_FEATURES)).astype(np.float32)
    np.savez(tmp_path / "validation.npz", x=x)  # more rows than one validation batch (64)
    # Per-step logits show no task of their own (not probabilities): a tagger is named one.
    tagger = fast_recipe(gate=LOOSE_GATE.model_copy(update={"task": "sequence"}))
    report = build(checkpoint, tagger, tmp_path / "out", tmp_path / "validation.npz",
                   factory="tests.optimize.models:build_time_major_tagger")
    accuracy = report["accuracy"]
    assert accuracy["samples"] == 150 and accuracy["agreement_over"] == "steps"
    assert accuracy["agreement"] >= 0.9
    assert "per-step argmax agreement" in (tmp_path / "out" / "summary.md").read_text()
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x[:3]})
    assert out.shape == (models.SEQ_STEPS, 3, models.SEQ_CLASSES)  # the layout is kept, batch on axis 1


def _three_heads(tmp_path, fmt):
    """ThreeHeads as a state_dict (dynamo export), or traced to TorchScript returning a tuple (its exporter
    takes no dicts), with validation data."""
    import torch

    from tests.optimize import models

    model = models.build_three_heads()
    if fmt == "state_dict":
        source, factory = tmp_path / "heads.pt", "tests.optimize.models:build_three_heads"
        torch.save({"state_dict": model.state_dict()}, source)
    else:
        source, factory = tmp_path / "heads.ts", None
        torch.jit.trace(models.AsTuple(model), torch.zeros(2, models.FEATURES)).save(str(source))
    x, y = models.mlp_data(100, seed=1)
    np.savez(tmp_path / "validation.npz", x=x, y=y)
    return source, factory, tmp_path / "validation.npz"


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_each_of_several_outputs_is_named_kept_in_its_layout_and_judged_by_its_own_task(tmp_path, fmt):
    import onnxruntime as ort

    from tests.optimize import models

    source, factory, val = _three_heads(tmp_path, fmt)
    report = build(source, fast_recipe(), tmp_path / "out", val, factory=factory)

    # Named by the model's dict keys (numbered for a tuple), each with its batch axis where the model keeps it.
    names = ["logits", "steps", "value"] if fmt == "state_dict" else ["output_0", "output_1", "output_2"]
    logits, steps, value = names
    assert [(o["name"], o["shape"]) for o in report["outputs"]] == [
        (logits, [None, models.CLASSES]), (steps, [models.SEQ_STEPS, None, models.SEQ_CLASSES]), (value, [None, 1]),
    ]  # fmt: skip
    fidelity = report["fidelity"]
    # Labels make the first output classification; the per-step logits show no task (closeness).
    assert [(o["name"], o["task"]) for o in fidelity["outputs"]] == [
        (logits, "classification"), (steps, "closeness"), (value, "regression")
    ]  # fmt: skip
    by_output = {(c["output"], c["metric"]): c for c in fidelity["checks"]}
    # Labels score the first output only.
    assert set(by_output) == {(logits, "agreement"), (logits, "top1_drop"), (steps, "relative_error"),
                              (steps, "cosine_min"), (value, "relative_error")}  # fmt: skip
    assert all(c["passed"] for c in by_output.values())
    assert 0 < by_output[(value, "relative_error")]["value"] < 0.05
    assert by_output[(logits, "agreement")]["value"] == report["accuracy"]["agreement"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"fidelity of `{steps}`: closeness (inferred: the rank-3 output's steps" in summary

    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.load(val)["x"][:3]
    shapes = [a.shape for a in session.run(names, {"x": x})]
    assert shapes == [(3, models.CLASSES), (models.SEQ_STEPS, 3, models.SEQ_CLASSES), (3, 1)]


def test_a_gate_missed_by_one_of_several_outputs_names_that_output(tmp_path):
    source, factory, val = _three_heads(tmp_path, "state_dict")
    strict = GateSpec(min_agreement=0.5, max_accuracy_drop=1.0, max_relative_error=1e-6,
                      task={"steps": "sequence"})  # int8 moves `value`  # fmt: skip
    with pytest.raises(GateFailed, match=r"accuracy gate failed: value: relative error [0-9.]+ is above "
                                         r"gate.max_relative_error 0.0000 .*nothing was published"):  # fmt: skip
        build(source, fast_recipe(gate=strict), tmp_path / "out", val, factory=factory)
    assert leftovers(tmp_path, "out") == []


def test_gate_task_per_output(tmp_path):
    source, factory, val = _three_heads(tmp_path, "state_dict")
    gate = GateSpec(min_agreement=0.5, max_accuracy_drop=1.0, min_cosine=0.9, min_cosine_worst=0.5,
                    task={"logits": "embedding"})  # fmt: skip
    report = build(source, fast_recipe(gate=gate), tmp_path / "out", val, factory=factory)
    tasks = {o["name"]: (o["task"], o["task_reason"]) for o in report["fidelity"]["outputs"]}
    assert tasks["logits"] == ("embedding", "stated in the recipe (gate.task)")
    assert tasks["steps"][0] == "closeness" and tasks["steps"][1].startswith("inferred")
    assert {c["metric"] for c in report["fidelity"]["checks"] if c["output"] == "logits"} == {"cosine_mean",
                                                                                            "cosine_min"}  # fmt: skip

    wrong = GateSpec(task={"scores": "classification"})
    with pytest.raises(OptimizeError, match=r"gate.task names output\(s\) \['scores'\] the model does not have; "
                                            r"its outputs are \['logits', 'steps', 'value'\]"):  # fmt: skip
        build(source, fast_recipe(gate=wrong), tmp_path / "bad", val, factory=factory)
    assert leftovers(tmp_path, "bad") == []


def _flat_tokens(tmp_path):
    import torch

    from tests.optimize import models

    torch.save(models.build_flat_tokens().state_dict(), tmp_path / "flat.pt")
    np.savez(tmp_path / "validation.npz", **models.token_batch(64, seed=1))
    return tmp_path / "flat.pt", tmp_path / "validation.npz", "tests.optimize.models:build_flat_tokens"


def test_a_model_that_takes_one_length_only_keeps_the_datas_and_says_why(tmp_path):
    from tests.optimize import models

    source, val, factory = _flat_tokens(tmp_path)
    report = build(source, fast_recipe(), tmp_path / "out", val, factory=factory)
    seq = report["sequence"]
    assert seq["inputs"] == ["input_ids", "attention_mask"] and "padding mask" in seq["evidence"]
    assert seq["dynamic"] is False and seq["reason"], seq
    assert [i["shape"] for i in report["inputs"]] == [[None, models.TOKEN_STEPS]] * 2
    assert f"sequence length: fixed at {models.TOKEN_STEPS}" in (tmp_path / "out" / "summary.md").read_text()

    required = fast_recipe(export=ExportSpec(dynamic_sequence=True))
    with pytest.raises(OptimizeError, match=r"export.dynamic_sequence is true, but "):
        build(source, required, tmp_path / "strict", val, factory=factory)
    assert leftovers(tmp_path, "strict") == []

    off = build(source, fast_recipe(export=ExportSpec(dynamic_sequence=False)), tmp_path / "off", val, factory=factory)
    assert off["sequence"] is None and off["digest"] == report["digest"]
