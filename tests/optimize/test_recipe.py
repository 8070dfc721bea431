"""Recipes: presets, YAML/JSON round trip, errors that name the field, light import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from optimize.recipe import PRESETS, Recipe, RecipeError, load_recipe


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_yaml_and_json(name, tmp_path):
    recipe = PRESETS[name]
    assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())) == recipe
    assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe
    (tmp_path / "r.yaml").write_text(recipe.to_yaml())
    (tmp_path / "r.json").write_text(recipe.to_json())
    assert load_recipe(str(tmp_path / "r.yaml")) == recipe
    assert load_recipe(str(tmp_path / "r.json")) == recipe


def test_required_presets_exist():
    assert {"int8-dynamic", "int8-static", "fp16", "prune50-int8"} <= set(PRESETS)
    assert PRESETS["int8-static"].needs_calibration
    assert PRESETS["fp16"].needs_gpu
    assert PRESETS["prune50-int8"].prune.amount == 0.5


def test_unknown_field_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("quantize:\n  mode: dynamic_int8\n  bits: 4\n")
    with pytest.raises(RecipeError, match=r"quantize\.bits: unknown field"):
        load_recipe(str(path))


def test_bad_value_names_field_and_allowed_values():
    with pytest.raises(RecipeError) as err:
        Recipe.from_dict({"quantize": {"mode": "int4"}})
    assert "quantize.mode" in str(err.value) and "dynamic_int8" in str(err.value)


def test_shapes_round_trip():
    r = Recipe(export={"input_shapes": {"x": [1, 8, 8]}})
    assert Recipe.from_dict(json.loads(r.to_json())).export.input_shapes == {"x": (1, 8, 8)}


def test_unknown_preset_lists_presets():
    with pytest.raises(RecipeError, match="int8-dynamic"):
        load_recipe("int3")


def test_importing_recipe_does_not_import_torch_or_onnxruntime():
    heavy = ("torch", "onnxruntime", "onnx")
    code = f"import sys, optimize, optimize.recipe; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prune_amount_without_method_is_rejected():
    with pytest.raises(RecipeError, match=r"prune\.method is 'none'"):
        Recipe.from_dict({"prune": {"amount": 0.5}})


def test_recipe_is_frozen():
    with pytest.raises(Exception, match="frozen"):
        PRESETS["int8-dynamic"].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"metric_thresholds": {"iou": {"min": 0.9}}}, r"gate: Value error, metric_thresholds is set but metric is "
                                                       r"not; name the function \(module:function\)"),
        ({"metric": "no colon"}, r"gate\.metric: String should match pattern"),
        ({"metric": "m:f", "metric_thresholds": {"Mean IoU": {"min": 0.9}}}, r"names \['Mean IoU'\] are not figure "
                                                                             r"names"),
        ({"metric": "m:f", "metric_thresholds": {"iou": {}}}, r"gate\.metric_thresholds\.iou: Value error, give min, "
                                                              r"max or both"),
        ({"metric": "m:f", "metric_thresholds": {"iou": {"min": 0.9, "max": 0.5}}}, r"min 0\.9 is above max 0\.5"),
        ({"task": "ocr"}, r"gate\.task\.literal\[.*'ctc'.*'closeness'\]"),
        ({"ctc_blank": -1}, r"gate\.ctc_blank: Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_gate_is_one_line_naming_the_field(gate, message):
    with pytest.raises(RecipeError, match=message) as err:
        Recipe.from_dict({"gate": gate})
    assert "\n" not in str(err.value)
