"""Task arithmetic (Ilharco et al. 2023, https://arxiv.org/abs/2212.04089) and its
magnitude-pruned variant (the baseline of Yu et al. 2023, https://arxiv.org/abs/2311.03099)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from graftkit.methods.params import LAMBDA, density_spec, per_expert, pop_lambda, rescale_spec
from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import magnitude, merge_task_vectors

ILHARCO = "Ilharco et al. 2023, Editing models with task arithmetic, https://arxiv.org/abs/2212.04089"
YU = "Yu et al. 2023, Language Models are Super Mario, https://arxiv.org/abs/2311.03099"


def task_arithmetic(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    **params: Any,
) -> torch.Tensor:
    """``θ = b + λ Σ w_i (x_i − b)``.

    Args:
        experts: N (S) float32 tensors.
        base: (S) float32 base tensor.
        weights: N weights.
        seeds: ignored.
        **params: ``lambda`` (global scale, default 1).

    Returns:
        (S) float32 tensor.
    """
    return merge_task_vectors(experts, base, weights, lam=pop_lambda(params))


def magnitude_prune(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    density: float | Sequence[float] = 0.5,
    rescale: str = "none",
    **params: Any,
) -> torch.Tensor:
    """Keep each delta's top-``density`` entries by ``|d|`` per tensor, then task arithmetic.

    Args:
        experts: N (S) float32 tensors.
        base: (S) float32 base tensor.
        weights: N weights.
        seeds: ignored.
        density: per-expert fraction kept (``k = max(1, floor(density · n))``).
        rescale: ``none`` (default), ``paper`` (×1/density) or ``l1``.
        **params: ``lambda``.

    Returns:
        (S) float32 tensor.
    """
    dens = per_expert(density, len(experts), "density")
    return merge_task_vectors(
        experts,
        base,
        weights,
        lam=pop_lambda(params),
        sparsify=lambda d, i: magnitude(d, density=dens[i], rescale=rescale),
    )


METHODS.add(
    "task_arithmetic",
    MethodSpec(
        name="task_arithmetic",
        fn=task_arithmetic,
        summary="add the weighted sum of task vectors (x_i - base), scaled by lambda, to the base",
        paper=ILHARCO,
        params=(LAMBDA,),
        dense=True,
    ),
)
METHODS.add(
    "magnitude_prune",
    MethodSpec(
        name="magnitude_prune",
        fn=magnitude_prune,
        summary="keep the largest-magnitude fraction of each task vector, then task arithmetic",
        paper=YU,
        params=(density_spec(0.5), rescale_spec("none"), LAMBDA),
    ),
)
