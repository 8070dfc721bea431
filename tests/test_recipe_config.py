"""Recipes validate on construction and round-trip; errors name the field."""

from __future__ import annotations

import pytest

from optimize.recipe import PRESETS, Recipe, RecipeError, load_recipe


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_yaml_and_json(tmp_path, name):
    recipe = PRESETS[name]
    for suffix, text in ((".yaml", recipe.to_yaml()), (".json", recipe.to_json())):
        path = tmp_path / f"r{suffix}"
        path.write_text(text)
        assert load_recipe(str(path)) == recipe


def test_unknown_field_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("quantize:\n  mode: dynamic_int8\n  per_chanel: true\n")
    with pytest.raises(RecipeError, match=r"quantize\.per_chanel: unknown field"):
        load_recipe(str(path))


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(RecipeError, match=r"quantize\.mode: .*'dynamic_int8'.*'static_int8'"):
        Recipe.from_dict({"quantize": {"mode": "int4"}})


def test_prune_amount_without_method_is_rejected():
    with pytest.raises(RecipeError, match=r"prune\.method is 'none'"):
        Recipe.from_dict({"prune": {"amount": 0.5}})


def test_recipe_is_frozen():
    with pytest.raises(Exception, match="frozen"):
        PRESETS["int8-dynamic"].name = "x"  # type: ignore[misc]
