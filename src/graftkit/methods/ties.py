"""TIES-merging (Yadav et al. 2023, https://arxiv.org/abs/2306.01708): trim, elect sign,
disjoint mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from graftkit.methods.params import LAMBDA, TRIM_SCOPE, density_spec, per_expert, pop_lambda
from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import magnitude, merge_task_vectors

YADAV = "Yadav et al. 2023, TIES-Merging, https://arxiv.org/abs/2306.01708"


def ties(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    density: float | Sequence[float] = 0.2,
    trim_scope: str = "tensor",
    **params: Any,
) -> torch.Tensor:
    """``θ = b + λ · m`` with ``m`` the disjoint mean of the trimmed deltas.

    1. Trim: keep each delta's ``k = max(1, floor(density · n))`` largest-``|d|`` entries
       (ties: lower row-major index first). 2. Elect ``s = sign(Σ w_i d̂_i)`` (0 → +1).
    3. ``m = Σ_{i∈A} w_i d̂_i / Σ_{i∈A} w_i`` over the experts agreeing with ``s``.

    Args:
        experts: N (S) float32 tensors.
        base: (S) float32 base tensor.
        weights: N weights.
        seeds: ignored.
        density: per-expert fraction kept by the trim.
        trim_scope: ``tensor`` (rank within each tensor).
        **params: ``lambda``.

    Returns:
        (S) float32 tensor.
    """
    if trim_scope != "tensor":
        raise ValueError(f"trim_scope {trim_scope!r} is not supported here; use 'tensor'")
    dens = per_expert(density, len(experts), "density")
    return merge_task_vectors(
        experts,
        base,
        weights,
        lam=pop_lambda(params),
        sparsify=lambda d, i: magnitude(d, density=dens[i]),
        disjoint=True,
    )


METHODS.add(
    "ties",
    MethodSpec(
        name="ties",
        fn=ties,
        summary="trim each task vector to its largest entries, elect signs, average the agreeing ones",
        paper=YADAV,
        params=(density_spec(0.2), LAMBDA, TRIM_SCOPE),
        normalizes_weights=lambda params: True,
    ),
)
