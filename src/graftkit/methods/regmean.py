"""RegMean (Jin et al. 2023, "Dataless Knowledge Fusion by Merging Weights of Language Models",
https://arxiv.org/abs/2212.09849): each linear layer becomes the least-squares fit of the experts'
outputs on their inputs, known through each expert's Gram matrix of that layer's inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from graftkit.methods.linear import linear
from graftkit.methods.spec import METHODS, MethodSpec, ParamSpec

JIN = (
    "Jin et al. 2023, Dataless Knowledge Fusion by Merging Weights of Language Models, https://arxiv.org/abs/2212.09849"
)
ALPHA = ParamSpec(
    "alpha",
    float,
    0.9,
    "scale of the Gram matrices' off-diagonal entries (1: exact least squares, 0: diagonal weighting)",
    low=0.0,
    high=1.0,
)
RCOND = 1e-6
"""Relative eigenvalue below which a Gram sum counts as singular (float32 Grams carry ~1e-7)."""


def shrink(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """``G̃ = α G + (1 − α) diag(G)``: off-diagonal entries scaled by α, the diagonal kept.

    Args:
        gram: (in, in) Gram matrix; not modified.

    Returns:
        (in, in) new tensor of ``gram``'s dtype.
    """
    out = gram * alpha
    out.diagonal().copy_(gram.diagonal())
    return out


def regmean(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    stats: Sequence[torch.Tensor] | None = None,
    alpha: float = 0.9,
) -> torch.Tensor:
    """``W = (Σ_i w_i W_i G̃_i)(Σ_i w_i G̃_i)⁻¹`` for a linear layer, else the weighted average.

    With all ``w_i = 1`` this is the paper's RegMean; a weight ``w_i`` counts expert i's inputs
    ``w_i`` times. Solved in float64 by a Cholesky solve (never an explicit inverse). Input
    features that no expert's data ever reached (a zero row and column in every Gram) are
    undetermined by the data and take the weighted average of the experts' columns.

    Args:
        experts: N (out, in) float32 weights ``W_i`` (after the ``dare:`` pre-step, when given),
            or N tensors of any shape when ``stats`` is None.
        base: ignored (the method needs no base; ``dare:`` uses it before this runs).
        weights: N weights ``w_i``; their sum must not be 0.
        seeds: ignored.
        stats: N (in, in) Gram matrices ``G_i = X_iᵀ X_i`` of the layer's inputs on expert i's
            data, or None for tensors that are not a linear layer's weight (embeddings, norms,
            biases), which fall back to :func:`graftkit.methods.linear.linear`.
        alpha: ``α`` of :func:`shrink`, in [0, 1].

    Returns:
        (out, in) float32 tensor (the input's shape when ``stats`` is None).
    """
    if stats is None:
        return linear(experts, weights=weights)
    if not (len(stats) == len(experts) == len(weights)) or not experts:
        raise ValueError(f"{len(experts)} experts, {len(stats)} Gram matrices and {len(weights)} weights")
    n_in = experts[0].shape[-1]
    if experts[0].dim() != 2 or any(g.shape != (n_in, n_in) for g in stats):
        raise ValueError(f"RegMean needs (out, in) weights and (in, in) Grams, got {list(experts[0].shape)}")
    num = torch.zeros(experts[0].shape, dtype=torch.float64, device=experts[0].device)  # (out, in)
    den = torch.zeros(n_in, n_in, dtype=torch.float64, device=experts[0].device)  # (in, in)
    for x, g, w in zip(experts, stats, weights, strict=True):
        g_tilde = shrink(g.double(), alpha).mul_(w)  # (in, in)
        num.addmm_(x.double(), g_tilde)
        den.add_(g_tilde)
    unseen = (den.diagonal() == 0).nonzero().squeeze(1)  # (k,) features no data reached
    if unseen.numel():
        den[unseen, unseen] = float(sum(weights))
        num[:, unseen] = sum(w * x[:, unseen].double() for x, w in zip(experts, weights, strict=True))
    return _solve_right(num, den).float()


def _solve_right(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``W`` with ``W · den = num``: ``den`` is symmetric, so ``den · Wᵀ = numᵀ``.

    ``den`` is a sum of Gram matrices, so a Cholesky solve fits. When it is (numerically)
    singular, which only α = 1 with fewer independent inputs than features allows, the
    minimum-norm least-squares solution is taken instead, dropping directions whose eigenvalue
    is below :data:`RCOND` of the largest: the Grams arrive in float32, so those are noise.
    """
    factor, info = torch.linalg.cholesky_ex(den)  # (in, in) lower triangular
    pivots = factor.diagonal().square()  # (in,) the LDLᵀ pivots
    if int(info) == 0 and bool(pivots.min() > RCOND * den.diagonal().max()):
        return torch.cholesky_solve(num.T, factor).T  # (out, in)
    solution = torch.linalg.lstsq(den.cpu(), num.T.cpu(), rcond=RCOND, driver="gelsd").solution  # gelsd: CPU only
    return solution.to(num.device).T


METHODS.add(
    "regmean",
    MethodSpec(
        name="regmean",
        fn=regmean,
        summary="each linear layer solves least squares over the experts' inputs (needs `graft stats`)",
        paper=JIN,
        params=(ALPHA,),
        needs_base=False,
        normalizes_weights=lambda params: True,
        dense=True,
        needs_stats="regmean",
        stats_shape=lambda shape: (shape[1], shape[1]) if len(shape) == 2 else None,
    ),
)
