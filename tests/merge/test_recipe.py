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
    recipe = parse_recipe(
        {"merge_method": "linear", "models": [{"model": "a"}], "dtype": "float16", "out_dtype": "bf16"}
    )
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


def test_slices_and_models_are_exclusive():
    with pytest.raises(RecipeError, match="either `models:`"):
        parse_recipe({"merge_method": "linear", "slices": [], "models": [{"model": "a"}]})


def test_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        parse_recipe(tmp_path / "nope.yaml")


def test_not_a_mapping():
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe("- just\n- a list\n")


@pytest.mark.parametrize(
    ("text", "size"), [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), ("1000", 1000)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def _resolve(recipe):
    from graftkit.merge.validate import resolve_recipe

    return resolve_recipe(parse_recipe(recipe))


def test_mergekit_normalize_and_rescale_translate():
    resolved = _resolve(
        {
            "merge_method": "dare_ties",
            "base_model": "b",
            "models": [{"model": "b"}, {"model": "x", "parameters": {"density": 0.5, "weight": 1.0}}],
            "parameters": {"normalize": True, "rescale": True, "int8_mask": True},
        }
    )
    assert resolved.global_params["rescale"] == "paper"
    assert "normalize" not in resolved.global_params
    assert resolved.expert_paths == ["x"]  # mergekit lists the base among models; it is not an expert


def test_normalize_true_on_weighted_sum_divides_weights():
    resolved = _resolve(
        {
            "merge_method": "task_arithmetic",
            "base_model": "b",
            "models": [
                {"model": "x", "parameters": {"weight": 1.0}},
                {"model": "y", "parameters": {"weight": 3.0}},
            ],
            "parameters": {"normalize": True},
        }
    )
    assert [e["weight"] for e in resolved.expert_params] == [0.25, 0.75]


def test_normalize_false_on_ties_is_refused_with_reason():
    with pytest.raises(RecipeError, match="disjoint mean"):
        _resolve(
            {
                "merge_method": "ties",
                "base_model": "b",
                "models": [{"model": "x"}],
                "parameters": {"normalize": False},
            }
        )


def test_drop_rate_is_density_alias_and_both_are_refused():
    resolved = _resolve(
        {
            "merge_method": "dare_linear",
            "base_model": "b",
            "models": [{"model": "x", "parameters": {"drop_rate": 0.9}}],
        }
    )
    assert resolved.expert_params[0]["density"] == pytest.approx(0.1)
    with pytest.raises(RecipeError, match="not both"):
        _resolve(
            {
                "merge_method": "dare_linear",
                "base_model": "b",
                "models": [{"model": "x", "parameters": {"drop_rate": 0.9, "density": 0.1}}],
            }
        )


def test_della_density_epsilon_rule_is_checked_at_validation():
    with pytest.raises(RecipeError, match="epsilon"):
        _resolve(
            {
                "merge_method": "della",
                "base_model": "b",
                "models": [{"model": "x", "parameters": {"density": 0.9}}],
                "parameters": {"epsilon": 0.2},
            }
        )
