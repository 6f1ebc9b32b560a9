"""Linear merging: model soups (Wortsman et al. 2022, https://arxiv.org/abs/2203.05482)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from graftkit.methods.params import NORMALIZE
from graftkit.methods.spec import METHODS, MethodSpec


def linear(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    normalize: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``θ = Σ w_i x_i / Σ w_i`` (``normalize``), or ``Σ w_i x_i``.

    Args:
        experts: N (S) float32 tensors ``x_i``.
        base: ignored (the method needs no base).
        weights: N weights ``w_i``; with ``normalize`` their sum must not be 0.
        seeds: ignored.
        normalize: divide by ``Σ w_i``.
        out: optional (S) float32 tensor to write the result into.

    Returns:
        (S) float32 tensor (``out`` when given).
    """
    if len(weights) != len(experts) or not experts:
        raise ValueError(f"{len(weights)} weights for {len(experts)} experts")
    total = sum(weights)
    if normalize and total == 0:
        raise ValueError("linear with normalize: the weights sum to 0")
    if len(experts) > 1 and weights[0] == 1:
        out = torch.add(experts[0], experts[1], alpha=weights[1], out=out)  # (S), one pass for the first two
        rest = zip(experts[2:], weights[2:], strict=True)
    else:
        out = torch.mul(experts[0], weights[0], out=out)  # (S), a new tensor unless out is given
        rest = zip(experts[1:], weights[1:], strict=True)
    for x, w in rest:
        out.add_(x, alpha=w)
    return out.div_(total) if normalize and total != 1 else out


METHODS.add(
    "linear",
    MethodSpec(
        name="linear",
        fn=linear,
        summary="weighted average of the models (model soup); 'average' is equal weights",
        paper="Wortsman et al. 2022, Model soups, https://arxiv.org/abs/2203.05482",
        params=(NORMALIZE,),
        needs_base=False,
        normalizes_weights=lambda params: bool(params.get("normalize", True)),
        dense=True,
        takes_out=True,
    ),
)
