"""The shared stages: magnitude ranking, sparsifiers, sign election, disjoint mean."""

from __future__ import annotations

import pytest
import torch

from graftkit.methods.params import count, keep_count
from graftkit.methods.rng import uniform
from graftkit.methods.stages import (
    breadcrumbs,
    dare,
    della,
    della_probabilities,
    disjoint_mean,
    elect_sign,
    magnitude,
    top_magnitude_mask,
)


def test_keep_count_floors_with_a_minimum_of_one():
    assert keep_count(0.2, 10) == 2
    assert keep_count(0.25, 10) == 2
    assert keep_count(0.01, 10) == 1
    assert keep_count(1.0, 10) == 10
    assert count(0.29, 100) == 29  # 0.29 * 100 is 28.999999999999996 in binary


def test_top_mask_breaks_ties_by_lower_index():
    a = torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0, 2.0])
    assert top_magnitude_mask(a, 1).tolist() == [False, True, False, False, False, False]
    assert top_magnitude_mask(a, 3).tolist() == [False, True, True, True, False, False]
    assert top_magnitude_mask(a, 4).tolist() == [False, True, True, True, True, False]


def test_top_mask_selects_exactly_k_among_many_ties():
    a = torch.tensor([5.0] * 7 + [1.0] * 3)
    mask = top_magnitude_mask(a, 4)
    assert mask.sum() == 4 and mask[:4].all()


def test_magnitude_keeps_top_k_and_rescales():
    d = torch.tensor([4.0, -3.0, 2.0, 1.0])
    assert magnitude(d.clone(), density=0.5).tolist() == [4.0, -3.0, 0.0, 0.0]
    assert magnitude(d.clone(), density=0.5, rescale="paper").tolist() == [8.0, -6.0, 0.0, 0.0]
    l1 = magnitude(d.clone(), density=0.5, rescale="l1")
    torch.testing.assert_close(l1, torch.tensor([40 / 7, -30 / 7, 0.0, 0.0]))
    assert magnitude(d.clone(), density=0.1).tolist() == [4.0, 0.0, 0.0, 0.0]  # k = max(1, 0)


def test_magnitude_density_1_is_the_identity():
    d = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(magnitude(d.clone(), density=1.0, rescale="paper"), d)


def test_dare_keeps_exactly_where_the_seeded_draw_is_below_density():
    d = torch.full((8, 8), 2.0)
    out = dare(d.clone(), density=0.5, seed=99)
    keep = uniform((8, 8), 99, stream="dare") < 0.5
    assert torch.equal(out, torch.where(keep, 4.0, 0.0))
    assert 0 < keep.sum() < 64


def test_dare_rescale_none_and_l1():
    d = torch.linspace(-2, 3, 30)
    keep = uniform(d.shape, 5, stream="dare") < 0.3
    assert torch.equal(dare(d.clone(), density=0.3, seed=5, rescale="none"), torch.where(keep, d, 0.0))
    l1 = dare(d.clone(), density=0.3, seed=5, rescale="l1")
    torch.testing.assert_close(l1.abs().sum(), d.abs().sum())
    assert torch.equal(l1 != 0, keep & (d != 0))


def test_breadcrumbs_drops_outliers_and_small_entries():
    d = torch.arange(1.0, 101.0)  # |d| = 1..100
    out = breadcrumbs(d.clone(), density=0.5, gamma=0.05)  # drop 96..100, keep 46..95
    assert out.nonzero().squeeze(1).add(1).tolist() == list(range(46, 96))
    assert torch.equal(out[45:95], d[45:95])  # no rescaling


def test_breadcrumbs_drops_no_outliers_when_gamma_n_below_1():
    d = -torch.arange(1.0, 11.0)
    out = breadcrumbs(d.clone(), density=0.3, gamma=0.05)  # 0.05 * 10 < 1
    assert out.tolist() == [0.0] * 7 + [-8.0, -9.0, -10.0]


def test_breadcrumbs_keeps_density_when_outliers_and_kept_exceed_n():
    """density is the fraction kept: when gamma · n + k > n, fewer outliers are dropped (as mergekit)."""
    d = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert breadcrumbs(d.clone(), density=1.0, gamma=0.5).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert breadcrumbs(d.clone(), density=0.75, gamma=0.5).tolist() == [1.0, 2.0, 3.0, 0.0]
    assert breadcrumbs(d.clone(), density=0.25, gamma=0.5).tolist() == [0.0, 2.0, 0.0, 0.0]  # never all zero


def test_della_probabilities_follow_the_magnitude_rank():
    d = torch.tensor([[2.0, -4.0, 1.0, 3.0]])
    p = della_probabilities(d, density=0.5, epsilon=0.2)
    want = torch.tensor([[0.5 - 0.2 + 0.4 / 3, 0.7, 0.3, 0.5 + 0.2 - 0.4 / 3]])
    torch.testing.assert_close(p, want)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (), (4, 1)])
def test_della_probabilities_lie_in_range_with_row_mean_density(shape):
    d = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    p = della_probabilities(d, density=0.4, epsilon=0.15)
    assert p.shape == d.shape
    assert (p >= 0.25 - 1e-7).all() and (p <= 0.55 + 1e-7).all()
    rows = p.reshape(shape[0], -1) if len(shape) >= 2 else p.reshape(1, -1)
    torch.testing.assert_close(rows.mean(dim=1), torch.full((rows.shape[0],), 0.4))


def test_della_ranks_within_rows_not_across():
    d = torch.tensor([[1.0, 2.0], [10.0, 20.0]])
    p = della_probabilities(d, density=0.5, epsilon=0.1)
    torch.testing.assert_close(p, torch.tensor([[0.4, 0.6], [0.4, 0.6]]))


def test_della_probabilities_reject_out_of_range():
    with pytest.raises(ValueError, match="density"):
        della_probabilities(torch.ones(3), density=0.9, epsilon=0.15)


def test_della_rescales_kept_entries_by_one_over_p():
    d = torch.tensor([[2.0, -4.0, 1.0, 3.0]] * 16)
    p = della_probabilities(d, density=0.5, epsilon=0.2)
    keep = uniform(d.shape, 7, stream="della") < p
    out = della(d.clone(), density=0.5, epsilon=0.2, seed=7)
    torch.testing.assert_close(out, torch.where(keep, d / p, 0.0))
    assert 0 < keep.sum() < keep.numel()


def test_sign_election_is_weighted_and_zero_elects_plus():
    d1, d2 = torch.tensor([1.0, 1.0, -2.0]), torch.tensor([-1.0, -1.0, 1.0])
    assert elect_sign([d1, d2], (1.0, 1.0)).tolist() == [True, True, False]
    assert elect_sign([d1, d2], (1.0, 3.0)).tolist() == [False, False, True]


def test_disjoint_mean_averages_agreeing_experts_with_weights():
    d1 = torch.tensor([2.0, 3.0, 0.0, 1.0])
    d2 = torch.tensor([4.0, -1.0, 0.0, -5.0])
    m = disjoint_mean([d1.clone(), d2.clone()], (1.0, 3.0))
    # entry 0: (2 + 12) / 4; entry 1: sum 0 elects +, only d1; entry 2: A empty; entry 3: d2 only.
    assert m.tolist() == [3.5, 3.0, 0.0, -5.0]


def test_disjoint_mean_gives_zero_not_nan_when_agreeing_weights_cancel():
    d1, d2 = torch.tensor([1.0]), torch.tensor([2.0])
    m = disjoint_mean([d1, d2], (1.0, -1.0))  # sum 1 - 2 < 0 elects -, A is empty
    assert m.tolist() == [0.0]
    m = disjoint_mean([torch.tensor([1.0]), torch.tensor([1.0])], (1.0, -1.0))  # A = both, Σw = 0
    assert m.tolist() == [0.0]
