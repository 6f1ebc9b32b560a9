"""Walk METHODS: every entry is documented, typed and consistent with its function."""

from __future__ import annotations

import inspect

import pytest

from graftkit.methods import METHODS, WEIGHT

EXPECTED = {
    "linear", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune",
    "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "model_stock", "fisher", "regmean", "passthrough",
}  # fmt: skip


def test_registry_holds_every_method():
    assert set(METHODS.names()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entry_is_documented_and_typed(name):
    spec = METHODS.get(name)
    assert spec.name == name
    assert spec.summary and "https://" in spec.paper
    assert spec.fn.__doc__ and "Returns" in spec.fn.__doc__
    assert WEIGHT.name not in {p.name for p in spec.params}
    for p in spec.params:
        assert p.doc, f"{name}.{p.name} has no doc"
        assert p.check(p.default) is None, f"{name}.{p.name} default fails its own check"
        assert spec.param(p.name) is p
    assert spec.check_params({p.name: p.default for p in spec.params}) is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_function_defaults_match_the_specs(name):
    spec = METHODS.get(name)
    sig = inspect.signature(spec.fn)
    for p in spec.params:
        if p.name in sig.parameters:
            assert sig.parameters[p.name].default == p.default, f"{name}.{p.name}"
        else:  # ``lambda`` is a keyword and arrives through **params
            assert p.name == "lambda" and any(q.kind is q.VAR_KEYWORD for q in sig.parameters.values())


def test_flags():
    get = METHODS.get
    assert not get("linear").needs_base and not get("slerp").needs_base
    assert (get("slerp").min_models, get("slerp").max_models) == (2, 2)
    assert not get("slerp").accepts_dare
    assert get("model_stock").needs_base and get("model_stock").min_models == 2
    randomized = {n for n, s in METHODS.items() if s.randomized}
    assert randomized == {"dare_linear", "dare_ties", "della", "della_linear"}
    assert get("ties").param("density").per_expert and get("ties").param("density").default == 0.2
    assert get("magnitude_prune").param("rescale").default == "none"
    assert get("dare_ties").param("rescale").choices == ("paper", "none", "l1")
    assert get("ties").param("trim_scope").choices == ("tensor", "model")
    assert get("della").param("epsilon").default == 0.15
    assert get("breadcrumbs").param("gamma").default == 0.01 and get("breadcrumbs").param("gamma").per_expert
    assert (get("passthrough").min_models, get("passthrough").max_models) == (1, 1)
    assert not get("passthrough").needs_base and get("passthrough").param("scale").per_expert
    needs_stats = {n: s.needs_stats for n, s in METHODS.items() if s.needs_stats}
    assert needs_stats == {"fisher": "fisher", "regmean": "regmean"}
    assert not get("fisher").needs_base and not get("regmean").needs_base
    assert get("fisher").accepts_dare and get("regmean").accepts_dare
    assert get("regmean").param("alpha").default == 0.9 and not get("regmean").param("alpha").per_expert
    assert get("regmean").stats_shape((5, 3)) == (3, 3) and get("regmean").stats_shape((5,)) is None
    assert get("fisher").stats_shape((5, 3)) == (5, 3)


def test_della_cross_check_rejects_density_plus_epsilon_outside_0_1():
    check = METHODS.get("della").check_params
    assert check({"density": (0.5, 0.9), "epsilon": 0.15})
    assert check({"density": 0.1, "epsilon": 0.15})
    assert check({"density": (0.5, 0.3), "epsilon": 0.15}) is None
