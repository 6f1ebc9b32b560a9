"""Model Breadcrumbs (Davari & Belilovsky 2024, https://arxiv.org/abs/2312.06795): drop each
task vector's outliers and its smallest entries, then task arithmetic (``breadcrumbs``) or TIES
steps 2–3 (``breadcrumbs_ties``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from graftkit.methods.params import GAMMA, LAMBDA, density_spec, per_expert, pop_lambda
from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import breadcrumbs as crumbs
from graftkit.methods.stages import merge_task_vectors

DAVARI = "Davari & Belilovsky 2024, Model Breadcrumbs, https://arxiv.org/abs/2312.06795"


def _crumbs_merge(
    experts: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    weights: Sequence[float],
    density: float | Sequence[float],
    gamma: float | Sequence[float],
    params: dict[str, Any],
    disjoint: bool,
) -> torch.Tensor:
    dens = per_expert(density, len(experts), "density")
    gammas = per_expert(gamma, len(experts), "gamma")
    return merge_task_vectors(
        experts,
        base,
        weights,
        lam=pop_lambda(params),
        sparsify=lambda d, i: crumbs(d, density=dens[i], gamma=gammas[i]),
        disjoint=disjoint,
    )


def breadcrumbs(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    density: float | Sequence[float] = 0.9,
    gamma: float | Sequence[float] = 0.01,
    **params: Any,
) -> torch.Tensor:
    """Per tensor, drop the ``floor(gamma · n)`` largest-``|d|`` entries and keep the next
    ``max(1, floor(density · n))`` (fewer outliers when both exceed ``n``); then
    ``θ = b + λ Σ w_i d̃_i``.

    Args:
        experts: N (S) float32 tensors.
        base: (S) float32 base tensor.
        weights: N weights.
        seeds: ignored.
        density: per-expert fraction kept.
        gamma: per-expert fraction dropped as outliers (none when ``gamma · n < 1``).
        **params: ``lambda``.

    Returns:
        (S) float32 tensor.
    """
    return _crumbs_merge(experts, base, weights, density, gamma, params, disjoint=False)


def breadcrumbs_ties(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    density: float | Sequence[float] = 0.9,
    gamma: float | Sequence[float] = 0.01,
    **params: Any,
) -> torch.Tensor:
    """As :func:`breadcrumbs`, but combined by TIES' sign election and disjoint mean.

    Args: as :func:`breadcrumbs`.

    Returns:
        (S) float32 tensor.
    """
    return _crumbs_merge(experts, base, weights, density, gamma, params, disjoint=True)


_PARAMS = (density_spec(0.9), GAMMA, LAMBDA)
METHODS.add(
    "breadcrumbs",
    MethodSpec(
        name="breadcrumbs",
        fn=breadcrumbs,
        summary="drop each task vector's outliers and smallest entries, then task arithmetic",
        paper=DAVARI,
        params=_PARAMS,
    ),
)
METHODS.add(
    "breadcrumbs_ties",
    MethodSpec(
        name="breadcrumbs_ties",
        fn=breadcrumbs_ties,
        summary="drop each task vector's outliers and smallest entries, then TIES sign election",
        paper=DAVARI,
        params=_PARAMS,
        normalizes_weights=lambda params: True,
    ),
)
