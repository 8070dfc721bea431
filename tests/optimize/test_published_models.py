"""Published pretrained models with their own weights (tests/optimize/published.py), through the default
recipe and `auto`, judged on what a user of each model checks: a face detector's boxes and face decisions,
an OCR recogniser's decoded text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optimize import sources
from optimize.errors import OptimizeError
from optimize.pipeline import build
from optimize.recipe import PRESETS, BenchmarkSpec, GateSpec, QuantizeSpec, Recipe, SearchSpec
from tests.optimize import published

ONET = "tests.optimize.published:ONet"
OCR = "tests.optimize.published:OCRRecognizer"
FACE_METRIC = "tests.optimize.gate_metrics:face_boxes"
# What a user of MTCNN checks: boxes overlap the source's, no face decision at its threshold changes.
FACE_THRESHOLDS = {"mean_iou": {"min": 0.95}, "face_decisions_kept": {"min": 0.99}}
SHORT = BenchmarkSpec(threads=2, batch_sizes=(1,), warmup=2, iterations=10)
CTC = GateSpec(task="ctc")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faces")
    np.savez(root / "validation.npz", x=published.face_crops(240, seed=1))
    np.savez(root / "calibration.npz", x=published.face_crops(64, seed=2))
    return {"model": published.onet_weights(), "validation": root / "validation.npz",
            "calibration": root / "calibration.npz", "root": root}  # fmt: skip


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lines")
    images, texts = published.text_lines(96, seed=1)
    np.savez(root / "validation.npz", x=images, y=published.encode(texts))  # labels: the text of each line
    np.savez(root / "calibration.npz", x=published.text_lines(32, seed=2)[0])
    model = published.load(published.OCRRecognizer(), published.ocr_weights())
    torch.save(model.state_dict(), root / "recognizer.pt")
    return {"model": root / "recognizer.pt", "validation": root / "validation.npz",
            "calibration": root / "calibration.npz", "root": root}  # fmt: skip


def test_the_published_weights_are_a_legacy_pickle_and_load_weights_only():
    path = published.onet_weights()
    with path.open("rb") as fh:
        assert fh.read(1) == b"\x80"  # torch.save's legacy (non-zip) format, as facenet-pytorch ships it
    loaded = sources.load(path, ONET)
    assert loaded.format == "state_dict" and loaded.input_names == ["x"]
    with pytest.raises(OptimizeError, match=r"is a state_dict; give --factory"):
        sources.load(path, None)


def test_a_legacy_pickle_of_a_whole_module_is_still_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(published.ONet(), path, _use_new_zipfile_serialization=False)
    with pytest.raises(OptimizeError, match=r"is a legacy pickle that holds more than weights; it is not loaded "
                                            r"because unpickling runs arbitrary code"):
        sources.load(path, ONET)


def test_the_face_detector_passes_the_default_recipe_judged_per_head(faces):
    recipe = PRESETS["int8-dynamic"].model_copy(update={"gate": GateSpec(metric=FACE_METRIC,
                                                                          metric_thresholds=FACE_THRESHOLDS)})
    report = build(faces["model"], recipe, faces["root"] / "default", faces["validation"], factory=ONET)
    outputs = report["fidelity"]["outputs"]
    # Box offsets and landmarks are not class scores: judged by closeness, never by argmax.
    assert [o["task"] for o in outputs] == ["closeness", "closeness", "classification"]
    assert "probability distribution over 2 classes" in outputs[2]["task_reason"]
    checks = {(c["output"], c["metric"]): c for c in report["fidelity"]["checks"]}
    assert ("output_0", "agreement") not in checks and checks[("output_0", "relative_error")]["passed"]
    figures = report["fidelity"]["metric"]["figures"]
    assert figures["mean_iou"] >= 0.95 and figures["face_decisions_kept"] == 1.0, figures
    summary = (faces["root"] / "default" / "summary.md").read_text()
    assert "fidelity of `output_0`: closeness (inferred: no labels" in summary and "mean_iou" in summary


def test_auto_picks_an_int8_face_detector_that_keeps_every_face_decision(faces):
    recipe = PRESETS["auto"].model_copy(update={
        "benchmark": SHORT, "search": SearchSpec(iterations=10),
        "gate": GateSpec(metric=FACE_METRIC, metric_thresholds=FACE_THRESHOLDS)})  # fmt: skip
    report = build(faces["model"], recipe, faces["root"] / "auto", faces["validation"], faces["calibration"],
                   factory=ONET)  # fmt: skip
    search = report["search"]
    chosen = next(c for c in search["candidates"] if c.get("chosen"))
    assert chosen["mode"] in ("dynamic_int8", "static_int8") and chosen["passed"]
    assert "metric.face_decisions_kept" in chosen["figures"]  # the recipe metric is a figure auto weighs
    assert report["fidelity"]["metric"]["figures"]["face_decisions_kept"] == 1.0


def test_a_missed_check_of_an_inferred_head_says_how_to_name_its_task(faces):
    recipe = PRESETS["int8-dynamic"].model_copy(update={"benchmark": SHORT,
                                                        "gate": GateSpec(max_relative_error=0.001)})
    with pytest.raises(OptimizeError) as failed:
        build(faces["model"], recipe, faces["root"] / "strict", faces["validation"], factory=ONET)
    message = str(failed.value)
    assert "output_0: relative error" in message and "is above gate.max_relative_error 0.0010" in message
    assert "if it is another task, name it in the recipe, e.g. gate.task: {output_0: regression}" in message
    assert not (faces["root"] / "strict").exists()


def test_a_bad_recipe_metric_fails_before_any_build_work(faces):
    stages: list[str] = []
    recipe = PRESETS["int8-dynamic"].model_copy(update={"gate": GateSpec(
        metric=FACE_METRIC, metric_thresholds={"mean_iou": {"min": 0.9}, "recall": {"min": 0.9}})})  # fmt: skip
    with pytest.raises(OptimizeError, match=r"^gate\.metric_thresholds names \['recall'\], which gate\.metric "
                                            r"'tests\.optimize\.gate_metrics:face_boxes' does not return"):
        build(faces["model"], recipe, faces["root"] / "bad", faces["validation"], factory=ONET, progress=stages.append)
    assert stages == ["load"]  # nothing exported, quantized or benchmarked


def ocr_recipe(gate: GateSpec = CTC, **changes) -> Recipe:
    return Recipe(name="ocr", quantize=QuantizeSpec(mode="dynamic_int8"), gate=gate, benchmark=SHORT, **changes)


def test_the_recogniser_reads_the_lines_and_int8_keeps_its_text(lines):
    report = build(lines["model"], ocr_recipe(), lines["root"] / "default", lines["validation"], factory=OCR)
    acc = report["accuracy"]
    assert acc["cer_baseline"] < 0.02  # the published model reads these lines: the data is what it was made for
    assert acc["cer"] <= 0.01 and acc["cer_increase"] <= 0.005 and acc["sequence_exact"] >= 0.95, acc
    assert [c["metric"] for c in report["fidelity"]["checks"]] == ["cer", "sequence_exact", "cer_increase"]
    assert report["fidelity"]["outputs"][0]["task_reason"] == "stated in the recipe (gate.task)"


def test_auto_chooses_among_recogniser_candidates_by_decoded_text(lines):
    recipe = ocr_recipe(search=SearchSpec(iterations=10))
    report = build(lines["model"], recipe, lines["root"] / "auto", lines["validation"], lines["calibration"],
                   factory=OCR)  # fmt: skip
    tried = [c for c in report["search"]["candidates"] if "figures" in c]
    assert {"cer", "sequence_exact"} <= set(tried[0]["figures"]) and len(tried) >= 3
    chosen = next(c for c in tried if c.get("chosen"))
    assert chosen["figures"]["cer"] <= 0.01
    saved = json.loads((lines["root"] / "auto" / "report.json").read_text())
    assert saved["accuracy"]["cer"] == report["accuracy"]["cer"]


def test_per_step_scores_are_not_taken_for_classes_unless_named(lines):
    recipe = ocr_recipe(gate=GateSpec(task="auto"))
    with pytest.raises(OptimizeError, match=r"labels 'y' are sequences \(rank 2\), which score a ctc output, but "
                                            r"'output' is judged as closeness; name it: gate\.task: \{output: ctc\}"):
        build(lines["model"], recipe, lines["root"] / "unnamed", lines["validation"], factory=OCR)
    unlabelled = lines["root"] / "unlabelled.npz"
    np.savez(unlabelled, x=np.load(lines["validation"])["x"][:32])
    report = build(lines["model"], recipe, lines["root"] / "closeness", unlabelled, factory=OCR)
    (output,) = report["fidelity"]["outputs"]
    assert output["task"] == "closeness" and "steps are not probability distributions" in output["task_reason"]
