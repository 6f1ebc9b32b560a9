"""DARE (Yu et al. 2023, "Language Models are Super Mario", https://arxiv.org/abs/2311.03099):
random drop and rescale, then task arithmetic (``dare_linear``) or TIES steps 2–3
(``dare_ties``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from graftkit.methods.params import LAMBDA, density_spec, per_expert, pop_lambda, rescale_spec
from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import dare, merge_task_vectors

YU = "Yu et al. 2023, Language Models are Super Mario, https://arxiv.org/abs/2311.03099"


def _dare_merge(
    experts: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int],
    density: float | Sequence[float],
    rescale: str,
    params: dict[str, Any],
    disjoint: bool,
) -> torch.Tensor:
    dens = per_expert(density, len(experts), "density")
    if len(seeds) != len(experts):
        raise ValueError(f"{len(seeds)} seeds for {len(experts)} experts")
    return merge_task_vectors(
        experts,
        base,
        weights,
        lam=pop_lambda(params),
        sparsify=lambda d, i: dare(d, density=dens[i], seed=seeds[i], rescale=rescale),
        disjoint=disjoint,
    )


def dare_linear(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int],
    density: float | Sequence[float] = 0.5,
    rescale: str = "paper",
    **params: Any,
) -> torch.Tensor:
    """DARE on each delta, then ``θ = b + λ Σ w_i d̃_i``.

    Args:
        experts: N (S) float32 tensors.
        base: (S) float32 base tensor.
        weights: N weights.
        seeds: N expert seeds (the keep mask of expert i is drawn from ``seeds[i]``).
        density: per-expert keep probability.
        rescale: ``paper`` (×1/density), ``none`` or ``l1``.
        **params: ``lambda``.

    Returns:
        (S) float32 tensor.
    """
    return _dare_merge(experts, base, weights, seeds, density, rescale, params, disjoint=False)


def dare_ties(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int],
    density: float | Sequence[float] = 0.5,
    rescale: str = "paper",
    **params: Any,
) -> torch.Tensor:
    """DARE on each delta, then TIES' sign election and disjoint mean (no magnitude trim).

    Args: as :func:`dare_linear`.

    Returns:
        (S) float32 tensor.
    """
    return _dare_merge(experts, base, weights, seeds, density, rescale, params, disjoint=True)


_PARAMS = (density_spec(0.5), rescale_spec("paper"), LAMBDA)
METHODS.add(
    "dare_linear",
    MethodSpec(
        name="dare_linear",
        fn=dare_linear,
        summary="randomly drop task-vector entries and rescale (DARE), then task arithmetic",
        paper=YU,
        params=_PARAMS,
        randomized=True,
        accepts_dare=False,
    ),
)
METHODS.add(
    "dare_ties",
    MethodSpec(
        name="dare_ties",
        fn=dare_ties,
        summary="randomly drop task-vector entries and rescale (DARE), then TIES sign election",
        paper=YU,
        params=_PARAMS,
        randomized=True,
        normalizes_weights=lambda params: True,
        accepts_dare=False,
    ),
)
