"""Fisher merging (Matena & Raffel 2022, https://arxiv.org/abs/2111.09832): a per-entry average
of the experts, each entry weighted by that expert's diagonal Fisher information."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from graftkit.methods.linear import linear
from graftkit.methods.spec import METHODS, MethodSpec

MATENA = "Matena & Raffel 2022, Merging Models with Fisher-Weighted Averaging, https://arxiv.org/abs/2111.09832"
FISHER_EPSILON = 1e-8
"""Added to every Fisher entry, so an entry no expert's gradient reached is a plain average."""


def fisher(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    stats: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``θ = Σ w_i F_i x_i / Σ w_i F_i`` per entry, with ``F_i`` expert i's diagonal Fisher + 1e-8.

    Args:
        experts: N (S) float32 tensors ``x_i`` (after the ``dare:`` pre-step, when given).
        base: ignored (the method needs no base; ``dare:`` uses it before this runs).
        weights: N weights ``w_i``; their sum must not be 0.
        seeds: ignored.
        stats: N (S) float32 diagonal Fishers ``F_i`` (the mean squared gradient of the
            log-likelihood), or None for a tensor without gradient information, which falls
            back to :func:`graftkit.methods.linear.linear`.

    Returns:
        (S) float32 tensor.
    """
    if stats is None:
        return linear(experts, weights=weights)
    if not (len(stats) == len(experts) == len(weights)) or not experts:
        raise ValueError(f"{len(experts)} experts, {len(stats)} Fishers and {len(weights)} weights")
    num = torch.zeros_like(experts[0])  # (S) Σ w_i F_i x_i
    den = torch.zeros_like(experts[0])  # (S) Σ w_i F_i
    for x, f, w in zip(experts, stats, weights, strict=True):
        if f.shape != x.shape:
            raise ValueError(f"a Fisher of shape {list(f.shape)} for a tensor of shape {list(x.shape)}")
        wf = (f + FISHER_EPSILON).mul_(w)  # (S), a new tensor: the statistic is not modified
        num.addcmul_(wf, x)
        den.add_(wf)
    return num.div_(den)


METHODS.add(
    "fisher",
    MethodSpec(
        name="fisher",
        fn=fisher,
        summary="per-entry average weighted by each expert's diagonal Fisher (needs `graft stats`)",
        paper=MATENA,
        needs_base=False,
        normalizes_weights=lambda params: True,
        dense=True,
        needs_stats="fisher",
        stats_shape=lambda shape: tuple(shape),
    ),
)
