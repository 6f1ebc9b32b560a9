"""run_method (defaults, checks, the dare pre-step) and weight edge cases."""

from __future__ import annotations

import pytest
import torch

from conftest import seeds_for
from graftkit.methods import METHODS, resolve_params, run_method
from graftkit.methods.linear import linear


def test_linear_normalize_with_zero_weight_sum_is_an_error():
    xs = [torch.ones(3), torch.ones(3)]
    with pytest.raises(ValueError, match="sum to 0"):
        linear(xs, weights=(1.0, -1.0))
    with pytest.raises(ValueError, match="sum of the weights"):
        run_method("linear", xs, base=None, weights=(1.0, -1.0))


def test_linear_without_normalize_accepts_a_zero_sum():
    xs = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0])]
    assert linear(xs, weights=(1.0, -1.0), normalize=False).tolist() == [-2.0, -3.0]


def test_scaling_all_weights_does_not_change_normalised_linear():
    xs = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])]
    torch.testing.assert_close(linear(xs, weights=(1.0, 3.0)), linear(xs, weights=(10.0, 30.0)))


@pytest.mark.parametrize("name", ["ties", "dare_ties", "breadcrumbs_ties", "della"])
def test_disjoint_mean_methods_reject_a_zero_weight_sum(name, trio):
    base, experts = trio
    assert METHODS.get(name).normalizes_weights({})
    with pytest.raises(ValueError, match="sum of the weights"):
        run_method(name, experts[:2], base=base, weights=(2.0, -2.0), seeds=seeds_for(2))


def test_normalizes_weights_flags():
    flags = {name: spec.normalizes_weights({}) for name, spec in METHODS.items()}
    normalizing = {"linear", "ties", "dare_ties", "breadcrumbs_ties", "della", "fisher", "regmean"}
    assert {n for n, f in flags.items() if f} == normalizing
    assert not METHODS.get("linear").normalizes_weights({"normalize": False})


def test_resolve_params_fills_defaults_and_broadcasts_per_expert():
    spec = METHODS.get("dare_ties")
    out = resolve_params(spec, {"density": 0.3}, 3)
    assert out == {"density": (0.3, 0.3, 0.3), "rescale": "paper", "lambda": 1.0}
    assert resolve_params(spec, {"density": [0.1, 0.2]}, 2)["density"] == (0.1, 0.2)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("ties", {"densty": 0.3}, "no parameter densty"),
        ("ties", {"density": 0.0}, "density must be >"),
        ("dare_ties", {"rescale": "l2"}, "rescale must be one of"),
        ("slerp", {"t": 1.5}, "t must be <="),
        ("della", {"density": 0.9}, "density ± epsilon"),
        ("ties", {"density": (0.2, 0.3, 0.4)}, "3 values for 2"),
    ],
)
def test_bad_params_are_rejected(name, params, match, trio):
    base, experts = trio
    with pytest.raises(ValueError, match=match):
        run_method(name, experts[:2], base=base, weights=(1.0, 1.0), seeds=seeds_for(2), params=params)


def test_model_counts_and_base_are_checked(trio):
    base, experts = trio
    with pytest.raises(ValueError, match="at most 2"):
        run_method("slerp", experts, base=None, weights=(1.0,) * 3)
    with pytest.raises(ValueError, match="at least 2"):
        run_method("model_stock", experts[:1], base=base, weights=(1.0,))
    with pytest.raises(ValueError, match="needs a base"):
        run_method("ties", experts, base=None, weights=(1.0,) * 3)


def test_per_expert_density_applies_to_each_expert(trio):
    base, experts = trio
    out = run_method("magnitude_prune", experts[:2], base=base, weights=(1.0, 0.0), params={"density": (1.0, 0.1)})
    torch.testing.assert_close(out, experts[0])  # expert 0 kept whole, expert 1 weighted 0


def test_dare_prestep_replaces_experts_by_base_plus_dare(trio):
    base, experts = trio
    seeds = seeds_for(3)
    dare = {"density": 0.4, "rescale": "paper"}
    via_prestep = run_method("task_arithmetic", experts, base=base, weights=(1.0,) * 3, seeds=seeds, dare=dare)
    direct = run_method("dare_linear", experts, base=base, weights=(1.0,) * 3, seeds=seeds, params=dare)
    plain = run_method("task_arithmetic", experts, base=base, weights=(1.0,) * 3)
    torch.testing.assert_close(via_prestep, direct)
    assert not torch.allclose(via_prestep, plain)


def test_dare_prestep_density_1_changes_nothing(trio):
    base, experts = trio
    kw = dict(base=base, weights=(1.0,) * 3, seeds=seeds_for(3))
    torch.testing.assert_close(
        run_method("ties", experts, dare={"density": 1.0}, **kw), run_method("ties", experts, **kw)
    )


def test_dare_prestep_is_refused_where_it_does_not_apply(trio):
    base, experts = trio
    with pytest.raises(ValueError, match="dare"):
        run_method("slerp", experts[:2], base=base, weights=(1.0, 1.0), seeds=seeds_for(2), dare={"density": 0.5})
    with pytest.raises(ValueError, match="dare"):
        run_method("linear", experts, base=None, weights=(1.0,) * 3, seeds=seeds_for(3), dare={"density": 0.5})


def test_inputs_are_not_modified(trio):
    base, experts = trio
    copies = [x.clone() for x in experts]
    for name in METHODS.names():
        n = {"slerp": 2, "passthrough": 1}.get(name, 3)
        run_method(name, experts[:n], base=base, weights=(1.0,) * n, seeds=seeds_for(n))
    assert all(torch.equal(x, c) for x, c in zip(experts, copies, strict=True))
