"""Property tests: malformed recipes of every shape either validate or raise a GraftError.

Never another exception type (a TypeError from deep inside, a traceback): recipe parsing,
``resolve_recipe`` and ``graft validate`` on a real tiny family are thrown random nested
structures, random field names and values, NaN, strings, lists, dicts and huge lists.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import save_family

from graftkit.errors import GraftError
from graftkit.merge.recipe import Recipe, parse_recipe
from graftkit.merge.report import validate_recipe
from graftkit.merge.validate import resolve_recipe
from graftkit.methods import METHODS

METHOD_NAMES = [name for name, _ in METHODS.items()]
PARAM_NAMES = sorted({"weight", "density", "drop_rate"} | {p.name for _, s in METHODS.items() for p in s.params})
FIELDS = list(Recipe.model_fields) + ["slices", "modules", "int8_mask", "weight", "tokenizer", ""]

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e-12, 1e300, float("nan"), float("inf"), "", "ties", "0.5", "nan"]),
    st.text(max_size=12),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS + PARAM_NAMES), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=20,
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0.0, 1.0, 0.5, -0.1, 1.5]),
)
param_values = st.one_of(
    numbers,
    scalars,
    st.lists(numbers, max_size=6),
    st.lists(numbers, min_size=200, max_size=400),  # huge per-layer lists
    st.lists(
        st.fixed_dictionaries(
            {"value": st.one_of(numbers, st.lists(numbers, max_size=5), scalars)},
            optional={"filter": st.one_of(st.text(max_size=6), st.sampled_from(["mlp", "*attn*", "["]), scalars)},
        ),
        max_size=3,
    ),
    anything,
)
params = st.dictionaries(st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=6)), param_values, max_size=4)


def model_entries(paths):
    entry = st.fixed_dictionaries({"model": paths}, optional={"parameters": st.one_of(params, anything)})
    return st.lists(st.one_of(entry, paths, anything), max_size=4)


def recipes(paths, base_paths):
    """Mostly recipe-shaped dicts, with every field sometimes wrong."""
    return st.fixed_dictionaries(
        {},
        optional={
            "merge_method": st.one_of(st.sampled_from(METHOD_NAMES + ["tie", "LINEAR", ""]), scalars),
            "models": st.one_of(model_entries(paths), anything),
            "base_model": st.one_of(base_paths, scalars),
            "parameters": st.one_of(params, anything),
            "dare": st.one_of(
                st.fixed_dictionaries(
                    {}, optional={"density": numbers, "rescale": st.sampled_from(["paper", "l1", "x"])}
                ),
                anything,
            ),
            "out_dtype": st.one_of(st.sampled_from(["bf16", "float16", "int8"]), scalars),
            "dtype": scalars,
            "seed": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), scalars),
            "tokenizer_source": scalars,
            "on_missing": st.one_of(st.sampled_from(["error", "base", "skip"]), scalars),
            "slices": anything,
        },
    ).flatmap(lambda d: st.dictionaries(st.text(max_size=8), anything, max_size=2).map(lambda extra: {**extra, **d}))


def plausible_recipes(paths, base_paths):
    """Recipe-shaped and mostly well-typed, so that many reach the checkpoint-level checks."""
    good_numbers = st.one_of(st.floats(min_value=-0.5, max_value=1.5), st.sampled_from([0.1, 0.5, 1.0]))
    good_values = st.one_of(
        good_numbers,
        st.lists(good_numbers, min_size=1, max_size=5),
        st.lists(
            st.fixed_dictionaries(
                {"value": st.one_of(good_numbers, st.lists(good_numbers, min_size=1, max_size=4))},
                optional={"filter": st.sampled_from(["mlp", "*attn*", "embed", "layers.1."])},
            ),
            min_size=1,
            max_size=3,
        ),
    )
    good_params = st.dictionaries(
        st.sampled_from(["weight", "density", "lambda", "t", "normalize"]), good_values, max_size=2
    )
    entry = st.fixed_dictionaries({"model": paths}, optional={"parameters": good_params})
    return st.fixed_dictionaries(
        {"merge_method": st.sampled_from(METHOD_NAMES), "models": st.lists(entry, min_size=1, max_size=3)},
        optional={
            "base_model": base_paths,
            "parameters": good_params,
            "dare": st.one_of(st.none(), st.fixed_dictionaries({"density": good_numbers})),
            "out_dtype": st.sampled_from(["bf16", "float16", "float32"]),
            "seed": st.integers(min_value=-(2**70), max_value=2**70),
            "on_missing": st.sampled_from(["error", "base", "skip"]),
            "tokenizer_source": st.one_of(st.none(), paths),
        },
    )


FAKE_PATHS = st.one_of(st.sampled_from(["a", "b", "", "../../etc", "$(true)", "x\x00y", "/"]), st.text(max_size=10))


def _only_graft_errors(fn, *args):
    with contextlib.suppress(GraftError):
        fn(*args)


def _parse_and_resolve(data):
    resolve_recipe(parse_recipe(data))


@SETTINGS
@given(recipes(FAKE_PATHS, FAKE_PATHS))
def test_parse_and_resolve_never_crash(data):
    _only_graft_errors(_parse_and_resolve, data)


@SETTINGS
@given(anything)
def test_any_structure_never_crashes(data):
    _only_graft_errors(_parse_and_resolve, data if isinstance(data, dict) else {"models": data})


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_any_yaml_text_never_crashes(text):
    _only_graft_errors(parse_recipe, "x: 1\n" + text)


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> tuple[Path, list[Path]]:
    return save_family(tmp_path_factory.mktemp("prop"), "llama", n_experts=2)


def test_validate_on_a_real_family_never_crashes(family, tmp_path_factory):
    base, experts = family
    real = st.sampled_from([str(base), *map(str, experts)])
    paths = st.one_of(real, real, FAKE_PATHS)
    folder = tmp_path_factory.mktemp("recipes")
    seen = {"ok": 0, "refused": 0}

    bases = st.one_of(real, st.none(), FAKE_PATHS)

    @SETTINGS
    @given(st.one_of(plausible_recipes(paths, bases), plausible_recipes(paths, bases), recipes(paths, bases)))
    def run(data):
        path = folder / "r.yaml"
        try:
            path.write_text(yaml.safe_dump(data, allow_unicode=True))
        except yaml.YAMLError:
            return
        try:
            validate_recipe(path)
            seen["ok"] += 1
        except GraftError:
            seen["refused"] += 1

    run()
    assert seen["refused"] > 0 and seen["ok"] > 0, seen


def test_a_valid_recipe_validates(family, tmp_path):
    """The generator's real paths do make valid recipes: the property test is not all refusals."""
    base, experts = family
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "merge_method": "ties",
                "base_model": str(base),
                "models": [{"model": str(e), "parameters": {"weight": 0.5, "density": [0.2, 0.8]}} for e in experts],
                "parameters": {"lambda": 1.0},
            }
        )
    )
    assert validate_recipe(path).startswith("recipe OK")
