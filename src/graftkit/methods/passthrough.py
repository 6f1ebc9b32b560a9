"""Passthrough: one model's tensor, unchanged or scaled; the method of layer stacks ("frankenmerges",
depth up-scaling as in Kim et al. 2023, SOLAR 10.7B, https://arxiv.org/abs/2312.15166)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from graftkit.methods.spec import METHODS, MethodSpec, ParamSpec

SCALE = ParamSpec(
    "scale",
    float,
    1.0,
    "multiply the tensor by this (e.g. 0 for o_proj/down_proj of a duplicated layer)",
    per_expert=True,
)


def passthrough(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    scale: float | Sequence[float] = 1.0,
) -> torch.Tensor:
    """``θ = scale · x`` for the single input ``x``; weights are ignored.

    Args:
        experts: one (S) float32 tensor.
        base: ignored.
        weights: ignored (one weight).
        seeds: ignored.
        scale: the factor (a 1-tuple when given per expert).

    Returns:
        (S) float32 tensor.
    """
    if len(experts) != 1:
        raise ValueError(f"passthrough takes exactly one tensor, got {len(experts)}")
    factor = float(scale[0] if isinstance(scale, Sequence) else scale)
    return experts[0] if factor == 1 else experts[0] * factor


METHODS.add(
    "passthrough",
    MethodSpec(
        name="passthrough",
        fn=passthrough,
        summary="copy one model's tensors (optionally scaled); with `slices:` it stacks layer ranges",
        paper="Kim et al. 2023, SOLAR 10.7B: depth up-scaling, https://arxiv.org/abs/2312.15166",
        params=(SCALE,),
        needs_base=False,
        min_models=1,
        max_models=1,
        accepts_dare=False,
        dense=True,
    ),
)
