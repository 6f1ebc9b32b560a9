"""Recipe parsing: structure, mergekit compatibility, helpful errors."""

import pytest

from graftkit.errors import RecipeError
from graftkit.merge.recipe import parse_recipe
from graftkit.merge.run import parse_size

MERGEKIT_TIES = """
models:
  - model: base
  - model: expert_a
    parameters:
      density: 0.5
      weight: 0.7
  - model: expert_b
    parameters:
      density: [1, 0.7, 0.1]
      weight:
        - filter: mlp
          value: 0.5
        - value: 1.0
merge_method: ties
base_model: base
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
"""


def test_mergekit_ties_config_parses():
    recipe = parse_recipe(MERGEKIT_TIES)
    assert recipe.merge_method == "ties"
    assert recipe.model_paths() == ["base", "expert_a", "expert_b"]
    assert recipe.storage_dtype == "bfloat16"
    assert "int8_mask" not in recipe.parameters  # mergekit-only memory option, ignored


def test_out_dtype_wins_over_mergekit_dtype():
    recipe = parse_recipe({"merge_method": "linear", "models": [{"model": "a"}], "dtype": "float16", "out_dtype": "bf16"})
    assert recipe.storage_dtype == "bfloat16"


def test_weight_outside_parameters_says_where_to_put_it():
    with pytest.raises(RecipeError, match=r"models\.0\.weight.*parameters"):
        parse_recipe({"merge_method": "linear", "models": [{"model": "a", "weight": 1.0}]})


def test_unknown_top_level_field_is_named():
    with pytest.raises(RecipeError, match="density"):
        parse_recipe({"merge_method": "ties", "models": [{"model": "a"}], "density": 0.5})


def test_missing_models_is_required():
    with pytest.raises(RecipeError, match="models"):
        parse_recipe({"merge_method": "linear"})


def test_bad_dtype_lists_valid_ones():
    with pytest.raises(RecipeError, match="bfloat16"):
        parse_recipe({"merge_method": "linear", "models": [{"model": "a"}], "out_dtype": "int4"})


def test_slices_are_refused_with_advice():
    with pytest.raises(RecipeError, match="slices"):
        parse_recipe({"merge_method": "linear", "slices": []})


def test_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        parse_recipe(tmp_path / "nope.yaml")


def test_not_a_mapping():
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe("- just\n- a list\n")


@pytest.mark.parametrize(("text", "size"), [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), ("1000", 1000)])
def test_parse_size(text, size):
    assert parse_size(text) == size
