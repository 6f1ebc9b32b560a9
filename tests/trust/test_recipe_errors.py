"""Recipe errors (issue #5 part 1): each mistake is a RecipeError naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.conftest import save_family

from graftkit.errors import GraftError, RecipeError
from graftkit.merge.recipe import parse_recipe
from graftkit.merge.report import validate_recipe
from graftkit.merge.validate import resolve_recipe


def check(data: dict):
    return resolve_recipe(parse_recipe(data))


def refused(data: dict, *needles: str) -> str:
    with pytest.raises(RecipeError) as err:
        check(data)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


TA = {"merge_method": "task_arithmetic", "base_model": "b", "models": [{"model": "x"}, {"model": "y"}]}


def with_(base: dict, **fields) -> dict:
    return {**base, **fields}


def test_unknown_method_suggests_the_closest():
    refused(with_(TA, merge_method="tie"), "`merge_method`", "'tie'", "Did you mean 'ties'?", "task_arithmetic")
    refused(with_(TA, merge_method="slurp"), "Did you mean 'slerp'?")


def test_unknown_parameter_suggests_the_closest():
    msg = refused(with_(TA, parameters={"lamda": 0.5}), "`parameters.lamda`", "no parameter `lamda`")
    assert "Did you mean `lambda`?" in msg


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (with_(TA, weight=0.5), ["unknown top-level field `weight`", "parameters: {weight"]),
        (with_(TA, density=0.5), ["unknown top-level field `density`", "parameters"]),
        (
            with_(TA, models=[{"model": "x", "weight": 0.5}]),
            ["`models.0.weight`", "unknown field `weight` in a model entry", "parameters:"],
        ),
    ],
)
def test_parameter_outside_parameters(data, needles):
    with pytest.raises(RecipeError) as err:
        parse_recipe(data)
    for needle in needles:
        assert needle in str(err.value)


def test_global_parameter_under_a_model():
    refused(
        with_(TA, models=[{"model": "x", "parameters": {"lambda": 0.5}}]),
        "`models[0].parameters.lambda`",
        "global",
        "top-level `parameters:`",
    )


@pytest.mark.parametrize("density", [0, -0.1, 1.5, float("nan")])
def test_density_out_of_range(density):
    data = with_(TA, merge_method="ties", models=[{"model": "x", "parameters": {"density": density}}])
    refused(data, "`models[0].parameters.density`")


def test_density_one_is_fine():
    check(with_(TA, merge_method="ties", parameters={"density": 1.0}))


def test_density_and_drop_rate_together():
    refused(
        with_(TA, merge_method="dare_ties", parameters={"density": 0.3, "drop_rate": 0.7}),
        "either `density` or `drop_rate`",
    )


def test_drop_rate_is_an_alias():
    resolved = check(with_(TA, merge_method="dare_ties", parameters={"drop_rate": 0.75}))
    assert resolved.expert_params[0]["density"] == pytest.approx(0.25)


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_weights_summing_to_zero_under_normalisation(method):
    models = [{"model": "x", "parameters": {"weight": 1.0}}, {"model": "y", "parameters": {"weight": -1.0}}]
    refused(with_(TA, merge_method=method, models=models), "sum to 0", "normalize: false" if method == "linear" else "")


def test_weights_summing_to_zero_without_normalisation_is_fine():
    models = [{"model": "x", "parameters": {"weight": 1.0}}, {"model": "y", "parameters": {"weight": -1.0}}]
    check({"merge_method": "linear", "models": models, "parameters": {"normalize": False}})


@pytest.mark.parametrize("n", [1, 3])
def test_slerp_needs_exactly_two_models(n):
    refused({"merge_method": "slerp", "models": [{"model": f"m{i}"} for i in range(n)]}, "exactly 2", f"got {n}")


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties", "della", "model_stock", "breadcrumbs"])
def test_missing_base(method):
    refused({"merge_method": method, "models": [{"model": "x"}, {"model": "y"}]}, "`base_model`", "name the base")


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_values_are_refused(value):
    refused(with_(TA, parameters={"lambda": value}), "`parameters.lambda`", "finite")
    refused(with_(TA, models=[{"model": "x", "parameters": {"weight": [1.0, value]}}]), "finite")


def test_slerp_t_outside_unit_interval():
    refused(
        {"merge_method": "slerp", "models": [{"model": "a"}, {"model": "b"}], "parameters": {"t": 1.2}},
        "`parameters.t`",
    )


def test_wrong_type_with_a_cross_parameter_rule_is_reported_not_crashed():
    """della checks density ± epsilon together; a string density must not reach that arithmetic."""
    refused(with_(TA, merge_method="della", parameters={"density": "half"}), "`parameters.density`", "number")


def test_empty_model_path():
    with pytest.raises(RecipeError, match=r"models\.0\.model"):
        parse_recipe(with_(TA, models=[{"model": ""}]))
    with pytest.raises(RecipeError, match="base_model"):
        parse_recipe(with_(TA, base_model="  "))


def test_mergekit_modules_are_refused_with_advice():
    data = {"merge_method": "linear", "modules": [{"sources": [{"model": "a", "layer_range": [0, 8]}]}]}
    with pytest.raises(RecipeError) as err:
        parse_recipe(data)
    assert "`modules` is not supported" in str(err.value)


def test_inverted_slice_range_names_the_slice():
    data = {"merge_method": "passthrough", "slices": [{"sources": [{"model": "a", "layer_range": [8, 0]}]}]}
    with pytest.raises(RecipeError, match=r"`slices\.0\.sources\.0\.layer_range`: .*\[8, 0\] is inverted"):
        parse_recipe(data)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("merge_method: [ties\n", "not valid YAML"),
        ("just a string\n", "must be a YAML mapping"),
        ("a: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_malformed_yaml(tmp_path, text, needle):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=needle):
        parse_recipe(path)


def test_recipe_file_problems(tmp_path):
    with pytest.raises(RecipeError, match="is a folder"):
        parse_recipe(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(RecipeError, match="not UTF-8"):
        parse_recipe(tmp_path / "bin.yaml")
    with pytest.raises(RecipeError, match="bad"):
        parse_recipe("bad\x00name.yaml")


# --------------------------------------------------------------------------- needs the model's layer count


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> tuple[Path, list[Path]]:
    return save_family(tmp_path_factory.mktemp("rerr"), "llama", n_experts=2)  # 3 layers


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_per_layer_list_longer_than_the_model(family, tmp_path):
    base, experts = family
    data = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": str(experts[0]), "parameters": {"weight": [1, 0.9, 0.8, 0.7, 0.6]}},
            {"model": str(experts[1])},
        ],
        "parameters": {"density": [{"filter": "mlp", "value": [0.1, 0.2, 0.3, 0.4]}, {"value": 0.5}]},
    }
    with pytest.raises(RecipeError) as err:
        validate_recipe(_write(tmp_path / "r.yaml", data))
    msg = str(err.value)
    assert "`models[0].parameters.weight` lists 5 values but the model has 3 layers" in msg
    assert "`parameters.density` lists 4 values" in msg


def test_per_layer_list_that_fits_is_fine(family, tmp_path):
    base, experts = family
    data = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(experts[0]), "parameters": {"weight": [1, 0.5, 0.2]}}, {"model": str(experts[1])}],
    }
    assert "recipe OK" in validate_recipe(_write(tmp_path / "r.yaml", data))


def test_mergekit_style_base_among_models_is_fine(family, tmp_path):
    base, experts = family
    data = {"merge_method": "ties", "base_model": str(base), "models": [{"model": str(p)} for p in (base, *experts)]}
    summary = validate_recipe(_write(tmp_path / "r.yaml", data))
    assert "of 2 model(s)" in summary


def test_every_recipe_error_is_a_graft_error():
    assert issubclass(RecipeError, GraftError) and RecipeError.exit_code == 2
