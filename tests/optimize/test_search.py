"""The `auto` recipe: a bounded, ordered search that returns the fastest candidate passing the gate."""

from __future__ import annotations

import json

import numpy as np
import torch

from optimize import search
from optimize.pipeline import build
from optimize.recipe import PRESETS, GateSpec, Recipe, SearchSpec
from tests.optimize.conftest import FAST, LOOSE_GATE
from tests.optimize.models import FEATURES, mlp_data, trained_mlp

QUICK = SearchSpec(iterations=5)


def auto(**sections) -> Recipe:
    return PRESETS["auto"].model_copy(update={"benchmark": FAST, "search": QUICK, **sections})


def test_candidates_are_a_fixed_list_in_a_fixed_order():
    names = [n for n, _ in search.candidates(PRESETS["auto"], has_calibration=True)]
    assert names[0] == "dynamic-int8" and names[-1] == "fp32"
    assert names[1] in ("reduce_range true", "reduce_range false")
    assert names[2:5] == ["per-tensor weights", "no transformer fusions", "static-int8"]
    without = [n for n, _ in search.candidates(PRESETS["auto"], has_calibration=False)]
    assert "static-int8" not in without and len(without) == len(names) - 1
    assert all(r.search is None for _, r in search.candidates(PRESETS["auto"], has_calibration=True))


def test_auto_returns_the_fastest_passing_candidate_and_reports_every_one(mlp, tmp_path):
    report = build(mlp["torchscript"], auto(), tmp_path / "out", mlp["validation"], mlp["calibration"])
    found = report["search"]
    rows = [c for c in found["candidates"] if "skipped" not in c]
    # An MLP has nothing to fuse, and fp32 is only the fallback when no int8 variant passes.
    listed = [n for n, _ in search.candidates(PRESETS["auto"], True)]
    assert [c["name"] for c in rows] == [n for n in listed if n not in (search.NO_FUSIONS, "fp32")]
    assert {"name": search.NO_FUSIONS, "skipped": "the export has nothing to fuse"} in found["candidates"]
    passing = [c for c in rows if c["passed"]]
    chosen = next(c for c in rows if c.get("chosen"))
    assert chosen["name"] == found["chosen"] and chosen["passed"]
    assert chosen["p50_b1_ms"] <= min(c["p50_b1_ms"] for c in passing) * search.NEAR_EQUAL
    assert report["recipe"]["name"] == f"auto: {chosen['name']}" and report["recipe"]["search"] is None
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| candidate | gate |" in summary and "**chosen**" in summary
    assert all(c["name"] in summary for c in rows)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["search"]["chosen"] == chosen["name"]


def test_an_exhausted_budget_skips_the_remaining_candidates(mlp, tmp_path):
    recipe = auto(search=SearchSpec(iterations=5, time_budget_s=0.001), gate=LOOSE_GATE)
    report = build(mlp["torchscript"], recipe, tmp_path / "out", mlp["validation"])
    rows = report["search"]["candidates"]
    assert "skipped" not in rows[0]  # the first always runs
    assert len(rows) > 2 and all("time budget" in r["skipped"] for r in rows[1:])


def outlier_mlp(root):
    """An MLP whose middle layer has one huge weight per row: per-channel int8 scales follow the outlier and
    round every other weight of that layer to zero, whatever the int8 variant; the layer must stay float."""
    model = trained_mlp()
    layer = model.net[2]
    with torch.no_grad():
        layer.weight[:, 0] += 400.0
        layer.bias -= 400.0 * torch.relu(model.net[0](torch.zeros(1, FEATURES)))[0, 0]  # keep the ranking roughly
    path = root / "outlier.pt"
    torch.jit.trace(model.eval(), torch.zeros(2, FEATURES)).save(str(path))
    x, y = mlp_data(300, seed=1)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()  # labels the source gets right
    np.savez(root / "validation.npz", x=x, y=y)
    return path, root / "validation.npz"


def test_when_no_int8_candidate_passes_the_most_sensitive_nodes_stay_float(tmp_path):
    model, val = outlier_mlp(tmp_path)
    strict = GateSpec(min_agreement=0.99, max_accuracy_drop=0.01)
    one = SearchSpec(iterations=5, exclude_nodes=1)  # the outlier layer alone is enough, if it is found
    report = build(model, auto(gate=strict, search=one), tmp_path / "out", val)
    rows = {c["name"]: c for c in report["search"]["candidates"] if "skipped" not in c}
    assert not any(c["passed"] for n, c in rows.items() if "sensitive" not in n)
    kept = next(c for n, c in rows.items() if "sensitive nodes in float" in n)
    assert kept["passed"] and kept.get("chosen"), kept
    assert report["recipe"]["quantize"]["exclude_nodes"] == ["/net/2/Gemm"]
    assert "fp32" not in rows  # an int8 variant passed: no fallback
    assert report["fidelity"]["checks"][0]["value"] >= 0.99


def test_node_sensitivity_puts_the_outlier_layer_first(tmp_path):
    import onnx

    from optimize import sources
    from optimize.export import export
    from optimize.quantize import quantize
    from optimize.recipe import ExportSpec, QuantizeSpec

    model, val = outlier_mlp(tmp_path)
    x = np.load(val)["x"]
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save_model(export(sources.load(model), {"x": x[:2]}, ExportSpec(), tmp_path), str(fp32))
    quantize(fp32, int8, QuantizeSpec(mode="dynamic_int8"))
    ranking = search.node_sensitivity(fp32, int8, {"x": x[:16]})
    assert len(ranking) == 3 and ranking[0] == "/net/2/Gemm", ranking  # the three Linear layers, the outlier first
