"""Fisher merging and RegMean: the invariants of specs/methods.md, and values from plain float64 loops."""

from __future__ import annotations

import pytest
import torch

from conftest import seeds_for
from graftkit.methods import run_method
from graftkit.methods.fisher import FISHER_EPSILON, fisher
from graftkit.methods.linear import linear
from graftkit.methods.regmean import regmean, shrink
from graftkit.methods.stages import dare


def _grams(n: int, rows: int, width: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``n`` input matrices X_i (rows, width) and their Grams X_iᵀ X_i, float64."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(rows, width, generator=gen, dtype=torch.float64) for _ in range(n)]
    return xs, [x.T @ x for x in xs]


def test_equal_fishers_give_the_weighted_average(trio):
    _, experts = trio
    f = torch.rand(experts[0].shape, generator=torch.Generator().manual_seed(3))
    w = (1.0, 0.5, 2.0)
    out = fisher(experts, weights=w, stats=[f, f, f])
    torch.testing.assert_close(out, linear(experts, weights=w), rtol=1e-5, atol=1e-6)


def test_one_expert_fisher_returns_it(trio):
    _, (x, *_) = trio
    f = torch.rand(x.shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(fisher([x], weights=(1.0,), stats=[f]), x, rtol=1e-6, atol=1e-7)


def test_one_expert_regmean_returns_it():
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(5))
    _, (g,) = _grams(1, 12, 4)
    torch.testing.assert_close(regmean([w], weights=(1.0,), stats=[g.float()]), w, rtol=1e-5, atol=1e-5)


def test_fisher_weights_each_entry_by_its_fisher():
    # Expert 0 dominates entry 0, expert 1 entry 1.
    x0, x1 = torch.tensor([1.0, 1.0]), torch.tensor([5.0, 5.0])
    f0, f1 = torch.tensor([1e4, 1e-4]), torch.tensor([1e-4, 1e4])
    out = fisher([x0, x1], weights=(1.0, 1.0), stats=[f0, f1])
    torch.testing.assert_close(out, torch.tensor([1.0, 5.0]), rtol=0, atol=1e-3)


def test_regmean_alpha_1_is_least_squares_over_the_union_of_inputs():
    gen = torch.Generator().manual_seed(6)
    n_in, n_out = 6, 4
    xs, grams = _grams(3, 15, n_in, seed=7)
    ws = [torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) for _ in range(3)]
    ys = [x @ w.T for x, w in zip(xs, ws, strict=True)]  # (rows, out): each expert's outputs on its inputs
    want = torch.linalg.lstsq(torch.cat(xs), torch.cat(ys)).solution.T  # min Σ‖X_i Wᵀ − Y_i‖²
    out = regmean([w.float() for w in ws], weights=(1.0,) * 3, stats=[g.float() for g in grams], alpha=1.0)
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-4)


def test_regmean_alpha_0_is_a_diagonal_weighting():
    gen = torch.Generator().manual_seed(8)
    _, grams = _grams(3, 9, 5, seed=9)
    ws = [torch.randn(3, 5, generator=gen) for _ in range(3)]
    out = regmean(ws, weights=(1.0,) * 3, stats=[g.float() for g in grams], alpha=0.0)
    diag = [g.diagonal().float() for g in grams]  # (in,) each
    want = sum(w * d for w, d in zip(ws, diag, strict=True)) / sum(diag)  # W[:, j] = Σ W_i[:, j] G_i[j,j] / Σ G_i[j,j]
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_regmean_weight_counts_an_experts_data_that_many_times():
    gen = torch.Generator().manual_seed(10)
    _, grams = _grams(2, 8, 4, seed=11)
    grams = [g.float() for g in grams]
    ws = [torch.randn(3, 4, generator=gen) for _ in range(2)]
    twice = regmean(ws, weights=(2.0, 1.0), stats=grams, alpha=0.7)
    repeated = regmean([ws[0], ws[0], ws[1]], weights=(1.0,) * 3, stats=[grams[0], grams[0], grams[1]], alpha=0.7)
    torch.testing.assert_close(twice, repeated, rtol=1e-5, atol=1e-6)


def test_regmean_averages_input_features_no_data_reached():
    gen = torch.Generator().manual_seed(12)
    xs, _ = _grams(2, 10, 4, seed=13)
    for x in xs:
        x[:, 2] = 0  # feature 2 never active
    grams = [(x.T @ x).float() for x in xs]
    ws = [torch.randn(3, 4, generator=gen) for _ in range(2)]
    out = regmean(ws, weights=(1.0, 3.0), stats=grams, alpha=1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 2], (ws[0][:, 2] + 3 * ws[1][:, 2]) / 4)


def test_regmean_on_rank_deficient_data_gives_the_minimum_norm_least_squares_solution():
    # 2 rows of 5 features per expert with alpha 1: the Gram sum has rank 4 of 5.
    gen = torch.Generator().manual_seed(14)
    _, grams = _grams(2, 2, 5, seed=15)
    ws = [torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(2)]
    out = regmean([w.float() for w in ws], weights=(1.0, 1.0), stats=[g.float() for g in grams], alpha=1.0).double()
    num, den = ws[0] @ grams[0] + ws[1] @ grams[1], grams[0] + grams[1]
    torch.testing.assert_close(out @ den, num, rtol=1e-3, atol=1e-3)  # the normal equations hold
    torch.testing.assert_close(out, num @ torch.linalg.pinv(den, hermitian=True), rtol=1e-3, atol=1e-3)


def test_without_statistics_both_fall_back_to_the_weighted_average(trio):
    _, experts = trio
    w = (1.0, 0.5, 2.0)
    want = linear(experts, weights=w)
    assert torch.equal(fisher(experts, weights=w, stats=None), want)
    assert torch.equal(regmean(experts, weights=w, stats=None), want)
    assert torch.equal(run_method("regmean", experts, base=None, weights=w), want)


def test_statistics_are_not_modified_and_only_methods_that_need_them_take_them(trio):
    base, experts = trio
    f = [torch.rand(experts[0].shape, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    copies = [t.clone() for t in f]
    run_method("fisher", experts, base=None, weights=(1.0,) * 3, stats=f)
    _, grams = _grams(3, 10, 6)
    grams = [g.float() for g in grams]
    gram_copies = [g.clone() for g in grams]
    run_method("regmean", experts, base=None, weights=(1.0,) * 3, stats=grams, params={"alpha": 0.3})
    assert all(torch.equal(a, b) for a, b in zip(f + grams, copies + gram_copies, strict=True))
    with pytest.raises(ValueError, match="takes no statistics"):
        run_method("linear", experts, base=None, weights=(1.0,) * 3, stats=f)
    with pytest.raises(ValueError, match="alpha"):
        run_method("regmean", experts, base=None, weights=(1.0,) * 3, stats=grams, params={"alpha": 1.5})


@pytest.mark.parametrize("method", ["fisher", "regmean"])
def test_dare_prestep_merges_base_plus_sparsified_deltas(method, trio):
    base, experts = trio
    gen = torch.Generator().manual_seed(16)
    if method == "fisher":
        stats = [torch.rand(experts[0].shape, generator=gen) for _ in range(3)]
    else:
        stats = [g.float() for g in _grams(3, 10, 6, seed=17)[1]]
    seeds = seeds_for(3)
    w = (1.0, 0.5, 2.0)
    with_dare = run_method(method, experts, base=base, weights=w, seeds=seeds, stats=stats, dare={"density": 0.5})
    sparsified = [base + dare(x - base, density=0.5, seed=s) for x, s in zip(experts, seeds, strict=True)]
    by_hand = run_method(method, sparsified, base=None, weights=w, stats=stats)
    torch.testing.assert_close(with_dare, by_hand, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(with_dare, run_method(method, experts, base=None, weights=w, stats=stats))


def test_shrink_scales_off_diagonal_entries_only():
    g = torch.tensor([[4.0, 2.0], [2.0, 3.0]])
    torch.testing.assert_close(shrink(g, 0.25), torch.tensor([[4.0, 0.5], [0.5, 3.0]]))


# Golden values from straightforward float64 loops (no torch linear algebra), on fixed inputs.


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gauss-Jordan elimination with partial pivoting: x with a x = b."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                factor = m[r][col] / m[col][col]
                m[r] = [v - factor * p for v, p in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def test_golden_fisher_from_loops():
    xs = [[[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], [[1.0, 1.0, 0.0], [-2.0, 0.5, 1.0]]]
    fs = [[[0.1, 2.0, 0.0], [1.0, 0.3, 5.0]], [[0.4, 0.5, 0.0], [0.0, 0.3, 1.0]]]
    w = [0.7, 1.8]
    want = [[0.0] * 3 for _ in range(2)]
    for r in range(2):
        for c in range(3):
            num = sum(w[i] * (fs[i][r][c] + 1e-8) * xs[i][r][c] for i in range(2))
            den = sum(w[i] * (fs[i][r][c] + 1e-8) for i in range(2))
            want[r][c] = num / den
    out = run_method("fisher", [torch.tensor(x) for x in xs], base=None, weights=w, stats=[torch.tensor(f) for f in fs])
    torch.testing.assert_close(out, torch.tensor(want), rtol=1e-6, atol=1e-7)
    assert FISHER_EPSILON == 1e-8


def test_golden_regmean_from_loops():
    xs = [[[1.0, 0.0, 2.0], [0.5, -1.0, 1.0]], [[0.0, 2.0, -1.0], [1.0, 1.0, 1.0]]]  # W_i (2, 3)
    inputs = [  # X_i (4, 3): G_i = X_iᵀ X_i
        [[1.0, 0.5, 0.0], [0.0, 1.0, 1.0], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0]],
        [[0.5, 0.0, 1.0], [1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.5]],
    ]
    w, alpha = [1.0, 2.0], 0.6
    grams = [[[sum(x[t][a] * x[t][b] for t in range(4)) for b in range(3)] for a in range(3)] for x in inputs]
    shrunk = [[[g[a][b] * (1.0 if a == b else alpha) for b in range(3)] for a in range(3)] for g in grams]
    den = [[sum(w[i] * shrunk[i][a][b] for i in range(2)) for b in range(3)] for a in range(3)]
    num = [
        [sum(w[i] * xs[i][r][k] * shrunk[i][k][c] for i in range(2) for k in range(3)) for c in range(3)]
        for r in range(2)
    ]
    want = [_solve(den, num[r]) for r in range(2)]  # den is symmetric: row r of W solves den · wᵣ = numᵣ
    out = run_method(
        "regmean",
        [torch.tensor(x) for x in xs],
        base=None,
        weights=w,
        stats=[torch.tensor(g) for g in grams],
        params={"alpha": alpha},
    )
    torch.testing.assert_close(out, torch.tensor(want), rtol=1e-5, atol=1e-6)
