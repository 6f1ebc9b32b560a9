"""Golden values: hand-computed cases for every method, and ``golden.json`` (make_golden.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from make_golden import CASES, GOLDEN, compute

from graftkit.methods import METHODS, expert_seed, run_method
from graftkit.methods.rng import uniform

T = torch.tensor
C = math.cos(math.pi / 6)
MS = 2 * math.sqrt(0.5) / (1 + math.sqrt(0.5))  # model_stock t for cos = 1/sqrt(2), N = 2

# (method, experts, base, weights, params, expected): every value worked out by hand.
HAND = [
    ("linear", [T([1.0, 2.0]), T([3.0, 6.0])], None, (1, 3), {}, [2.5, 5.0]),
    ("linear", [T([1.0, 2.0]), T([3.0, 6.0])], None, (1, 3), {"normalize": False}, [10.0, 20.0]),
    ("slerp", [T([1.0, 0.0]), T([0.0, 1.0])], None, (1, 1), {"t": 1 / 3}, [C, 0.5]),
    ("slerp", [T([2.0, 0.0]), T([0.0, 1.0])], None, (1, 1), {"t": 0.5}, [2 * 0.5**0.5, 0.5**0.5]),
    (
        "task_arithmetic",
        [T([2.0, 1, 0]), T([1.0, 3, 1])],
        T([1.0, 1, 1]),
        (1, 0.5),
        {"lambda": 2.0},
        [3.0, 3, -1],
    ),
    # Trim to 2 of 4 (d2's tie |-1| = |-1| keeps index 0), elect with w = (1, 3): entry 0 sums
    # to exactly 0 and elects +, so only d1's 3 counts there. m = [3, 2, 0, -2], λ = 0.5.
    (
        "ties",
        [T([4.0, 0, 1.5, -1]), T([0.0, 3, 0.75, 0])],
        T([1.0, 1, 1, 1]),
        (1, 3),
        {"density": 0.5, "lambda": 0.5},
        [2.5, 2.0, 1.0, 0.0],
    ),
    # density 1: DARE keeps everything, so these are plain task arithmetic / sign election.
    (
        "dare_linear",
        [T([2.0, 1, 0]), T([1.0, 3, 1])],
        T([1.0, 1, 1]),
        (1, 0.5),
        {"density": 1.0},
        [2.0, 2, 0],
    ),
    ("dare_ties", [T([1.0, -2]), T([-3.0, 1])], T([0.0, 0]), (1, 1), {"density": 1.0}, [-3.0, -2.0]),
    # d1 keeps its top 2 (×2); d2's 2nd largest |d| is 0, so only 8 is kept (×2).
    (
        "magnitude_prune",
        [T([4.0, -3, 2, 1]), T([0.0, 0, 0, 8])],
        T([0.0, 0, 0, 0]),
        (1, 1),
        {"density": 0.5, "rescale": "paper"},
        [8.0, -6, 0, 16],
    ),
    # n = 10, gamma 0.1: drop the largest entry, keep the next 5; λ = 2.
    (
        "breadcrumbs",
        [torch.arange(1.0, 11.0)],
        torch.zeros(10),
        (1,),
        {"density": 0.5, "gamma": 0.1, "lambda": 2.0},
        [0.0, 0, 0, 0, 10, 12, 14, 16, 18, 0],
    ),
    # d2 drops its outlier -10 and keeps five of its tied -1s (lowest indices); then TIES.
    (
        "breadcrumbs_ties",
        [torch.arange(1.0, 11.0), -T([10.0] + [1.0] * 9)],
        torch.zeros(10),
        (1, 1),
        {"density": 0.5, "gamma": 0.1},
        [0.0, -1, -1, -1, 5, 6, 7, 8, 9, 0],
    ),
    # n = 4, density 0.75 keeps 3; gamma 0.5 asks for 2 outliers but only 1 can go (density holds).
    ("breadcrumbs", [T([1.0, -4, 2, 3])], torch.zeros(4), (1,), {"density": 0.75, "gamma": 0.5}, [1.0, 0, 2, 3]),
    # Per-expert gamma: 0.1 of n = 10 drops d1's 10; 0.3 drops d2's 10, 9 and 8; both keep 5.
    (
        "breadcrumbs",
        [torch.arange(1.0, 11.0), torch.arange(1.0, 11.0)],
        torch.zeros(10),
        (1, 1),
        {"density": 0.5, "gamma": (0.1, 0.3)},
        [0.0, 0, 3, 4, 10, 12, 14, 8, 9, 0],
    ),
    ("passthrough", [T([1.0, -2.0])], None, (1,), {}, [1.0, -2.0]),
    ("passthrough", [T([1.0, -2.0])], None, (3,), {"scale": 0.5}, [0.5, -1.0]),
    ("model_stock", [T([2.0, 1.0]), T([2.0, 2.0])], T([1.0, 1.0]), (1, 1), {}, [1 + MS, 1 + MS / 2]),
    ("model_stock", [T([2.0, 1.0]), T([1.0, 2.0])], T([1.0, 1.0]), (1, 1), {}, [1.0, 1.0]),
    ("model_stock", [T([3.0, 1.0]), T([3.0, 1.0])], T([1.0, 1.0]), (1, 1), {}, [3.0, 1.0]),
    # Anti-aligned deltas (cos < 0): the ratio is clamped to 0, giving the base.
    ("model_stock", [T([2.0, 1.0]), T([0.0, 1.5])], T([1.0, 1.0]), (1, 1), {}, [1.0, 1.0]),
]


@pytest.mark.parametrize("case", HAND, ids=[f"{c[0]}-{i}" for i, c in enumerate(HAND)])
def test_hand_computed_values(case):
    name, experts, base, weights, params, want = case
    seeds = tuple(range(len(experts)))
    out = run_method(name, experts, base=base, weights=weights, seeds=seeds, params=params)
    torch.testing.assert_close(out, T(want), rtol=1e-6, atol=1e-6)


# (method, experts, weights, stats, params, expected) for the methods that weigh experts by statistics.
HAND_STATS = [
    # Fisher: entry 0 (2·1 + 3·1·3) / (2 + 3) = 2.2; entry 1 (1·2 + 3·1·6) / (1 + 3) = 5 (ε = 1e-8 negligible).
    ("fisher", [T([1.0, 2.0]), T([3.0, 6.0])], (1, 3), [T([2.0, 1.0]), T([1.0, 1.0])], {}, [2.2, 5.0]),
    # A zero Fisher for both experts: ε makes the entry a plain weighted average, (1 + 3·3) / 4.
    ("fisher", [T([1.0]), T([3.0])], (1, 3), [T([0.0]), T([0.0])], {}, [2.5]),
    # RegMean, α = 1: Σ W_i G_i = [1, 2], Σ G_i = [[3, 1], [1, 3]], inverse [[3, −1], [−1, 3]] / 8.
    (
        "regmean",
        [T([[1.0, 0.0]]), T([[0.0, 1.0]])],
        (1, 1),
        [T([[1.0, 1.0], [1.0, 2.0]]), T([[2.0, 0.0], [0.0, 1.0]])],
        {"alpha": 1.0},
        [[1 / 8, 5 / 8]],
    ),
    # α = 0.5 halves G_1's off-diagonal: Σ W G̃ = [1, 1.5], Σ G̃ = [[3, .5], [.5, 3]] (det 8.75).
    (
        "regmean",
        [T([[1.0, 0.0]]), T([[0.0, 1.0]])],
        (1, 1),
        [T([[1.0, 1.0], [1.0, 2.0]]), T([[2.0, 0.0], [0.0, 1.0]])],
        {"alpha": 0.5},
        [[2.25 / 8.75, 4 / 8.75]],
    ),
    # Diagonal Grams: each column is weighted by its Gram entry, (2·2 + 0·1) / 3 and (0·1 + 4·3) / 4.
    (
        "regmean",
        [T([[2.0, 0.0]]), T([[0.0, 4.0]])],
        (1, 1),
        [T([[2.0, 0.0], [0.0, 1.0]]), T([[1.0, 0.0], [0.0, 3.0]])],
        {},
        [[4 / 3, 3.0]],
    ),
]


@pytest.mark.parametrize("case", HAND_STATS, ids=[f"{c[0]}-{i}" for i, c in enumerate(HAND_STATS)])
def test_hand_computed_values_with_statistics(case):
    name, experts, weights, stats, params, want = case
    out = run_method(name, experts, base=None, weights=weights, params=params, stats=stats)
    torch.testing.assert_close(out, T(want), rtol=1e-6, atol=1e-6)


def _row_and_mask(stream: str, seed: int, p: torch.Tensor) -> torch.Tensor:
    return uniform(p.shape, seed, stream=stream) < p


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_methods_on_a_constant_delta(name):
    # Every delta entry is 2: kept entries become 4 (×1/0.5), dropped ones 0.
    base = torch.zeros(6, 5)
    seed = expert_seed(0, 0, "w")
    out = run_method(name, [base + 2], base=base, weights=(1.0,), seeds=(seed,), params={"density": 0.5})
    keep = _row_and_mask("dare", seed, torch.full((6, 5), 0.5))
    assert torch.equal(out, torch.where(keep, 4.0, 0.0))


DELLA_METHODS = ["della", "della_linear"]  # random at any density: checked against their own masks


@pytest.mark.parametrize("name", DELLA_METHODS)
def test_della_methods_on_one_row(name):
    # Row [1, 2, 3, 4]: p = 0.3, 0.5 - 0.2/3, 0.5 + 0.2/3, 0.7 by rank; kept entries are d / p.
    d = T([[1.0, 2.0, 3.0, 4.0]])
    p = T([[0.3, 0.5 - 0.2 / 3, 0.5 + 0.2 / 3, 0.7]])
    seed = expert_seed(3, 0, "w")
    params = {"density": 0.5, "epsilon": 0.2}
    out = run_method(name, [d], base=torch.zeros(1, 4), weights=(1.0,), seeds=(seed,), params=params)
    keep = _row_and_mask("della", seed, p)
    torch.testing.assert_close(out, torch.where(keep, d / p, 0.0))


def test_every_method_has_hand_and_golden_cases():
    hand = {c[0] for c in HAND} | {c[0] for c in HAND_STATS} | set(DELLA_METHODS)
    assert hand == set(METHODS.names())
    assert {method for _, method, *_ in CASES} == set(METHODS.names())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_golden_json(case):
    golden = json.loads(GOLDEN.read_text())
    case_id, method, n, params, dare = case
    torch.testing.assert_close(compute(method, n, params, dare), T(golden[case_id]), rtol=1e-6, atol=1e-6)
