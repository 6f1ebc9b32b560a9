"""The invariants listed at the end of specs/methods.md, one test each."""

from __future__ import annotations

import pytest
import torch

from conftest import TASK_VECTOR_METHODS, seeds_for
from graftkit.methods import run_method
from graftkit.methods.linear import linear
from graftkit.methods.slerp import slerp
from graftkit.methods.stages import dare
from graftkit.methods.task_arithmetic import task_arithmetic
from graftkit.methods.ties import ties


def test_one_expert_linear_returns_it(trio):
    _, (x, *_) = trio
    assert torch.equal(linear([x], weights=(1.0,)), x)


def test_one_expert_task_arithmetic_lambda_1_returns_it(trio):
    base, (x, *_) = trio
    out = task_arithmetic([x], base=base, weights=(1.0,), **{"lambda": 1.0})
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_one_expert_ties_density_1_returns_it(trio):
    base, (x, *_) = trio
    torch.testing.assert_close(ties([x], base=base, weights=(1.0,), density=1.0), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", TASK_VECTOR_METHODS)
def test_experts_equal_to_base_give_the_base(name, trio):
    base, _ = trio
    experts = [base.clone(), base.clone(), base.clone()]
    out = run_method(name, experts, base=base, weights=(1.0, 2.0, 0.5), seeds=seeds_for(3))
    assert torch.equal(out, base)


def test_ties_density_1_without_conflicts_is_normalised_task_arithmetic():
    base = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -2.0]])
    # Every delta entry non-zero, and all experts agree in sign entry by entry.
    signs = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])
    deltas = [signs * torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]) * s for s in (0.5, 1.0, 2.5)]
    experts = [base + d for d in deltas]
    w = (1.0, 2.0, 3.0)
    out = ties(experts, base=base, weights=w, density=1.0, **{"lambda": 0.7})
    normalised = task_arithmetic(experts, base=base, weights=[x / sum(w) for x in w], **{"lambda": 0.7})
    torch.testing.assert_close(out, normalised)


def test_dare_mean_of_many_draws_converges_to_the_delta():
    d = torch.linspace(1.0, 2.0, 40) * torch.tensor([1.0, -1.0]).repeat(20)
    draws = 3000
    total = torch.zeros_like(d)
    for s in range(draws):
        total += dare(d.clone(), density=0.5, seed=s)
    # Per-entry sd of one draw is |d| (density 0.5): the mean's sd is |d| / sqrt(3000) ≈ 0.018|d|.
    torch.testing.assert_close(total / draws, d, rtol=0.1, atol=0)


@pytest.mark.parametrize("rescale", ["paper", "none", "l1"])
def test_dare_density_1_is_the_identity(rescale):
    d = torch.randn(5, 7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(dare(d.clone(), density=1.0, seed=11, rescale=rescale), d)


def test_slerp_t0_and_t1_return_the_endpoints():
    x0, x1 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-3.0, 0.5, 2.0])
    assert torch.equal(slerp([x0, x1], t=0.0), x0)
    assert torch.equal(slerp([x0, x1], t=1.0), x1)


def test_slerp_identical_inputs_return_that_input():
    x = torch.tensor([[0.3, -1.7], [2.5, 0.01]])
    for t in (0.1, 0.5, 0.9):
        assert torch.equal(slerp([x, x.clone()], t=t), x)


@pytest.mark.parametrize(
    "x0,x1",
    [
        (torch.zeros(4), torch.zeros(4)),
        (torch.zeros(4), torch.ones(4)),
        (torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 6.0, 8.0])),
        (torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-1.0, -2.0, -3.0, -4.0])),
    ],
    ids=["both-zero", "one-zero", "collinear", "opposite"],
)
def test_slerp_has_no_nan_for_zero_or_collinear_tensors(x0, x1):
    out = slerp([x0, x1], t=0.3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 0.7 * x0 + 0.3 * x1)  # the linear fallback


@pytest.mark.parametrize("name", ["linear", "ties", "dare_ties", "slerp"])
def test_output_dtype_is_out_dtype_and_the_fp32_merge_cast_once(name, trio):
    base, experts = trio
    base16 = base.bfloat16()
    experts16 = [x.bfloat16() for x in experts[:2]]
    kw = dict(base=base16, weights=(1.0, 1.0), seeds=seeds_for(2))
    out = run_method(name, experts16, out_dtype=torch.bfloat16, **kw)
    assert out.dtype == torch.bfloat16
    in_fp32 = run_method(name, [x.float() for x in experts16], **{**kw, "base": base16.float()})
    assert in_fp32.dtype == torch.float32
    assert torch.equal(out, in_fp32.bfloat16())
