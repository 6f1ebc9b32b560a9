"""DELLA-merging (Deep et al. 2024, https://arxiv.org/abs/2406.11617): magnitude-ranked
random drop (MagPrune) with 1/p rescaling, then TIES steps 2–3 (``della``) or task arithmetic
(``della_linear``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from graftkit.methods.params import EPSILON, LAMBDA, density_spec, per_expert, pop_lambda
from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import della as magprune
from graftkit.methods.stages import merge_task_vectors

DEEP = "Deep et al. 2024, DELLA-Merging, https://arxiv.org/abs/2406.11617"


def check_della(params: dict[str, Any]) -> str | None:
    """Every expert's ``density ± epsilon`` must lie in (0, 1)."""
    eps = params.get("epsilon", EPSILON.default)
    densities = params.get("density", 0.5)
    for density in densities if isinstance(densities, (tuple, list)) else (densities,):
        if not (density - eps > 0 and density + eps < 1):
            return f"density ± epsilon must lie in (0, 1), got density {density}, epsilon {eps}"
    return None


def _della_merge(
    experts: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int],
    density: float | Sequence[float],
    epsilon: float,
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
        sparsify=lambda d, i: magprune(d, density=dens[i], epsilon=epsilon, seed=seeds[i]),
        disjoint=disjoint,
    )


def della(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int],
    density: float | Sequence[float] = 0.5,
    epsilon: float = 0.15,
    **params: Any,
) -> torch.Tensor:
    """MagPrune each delta row-wise, then TIES' sign election and disjoint mean; ``b + λ m``.

    Within each row entry j is kept with probability ``p_j = density − ε + 2ε r_j`` (``r_j``
    its magnitude rank scaled to [0, 1], largest → 1) and rescaled by ``1/p_j``; see
    :func:`graftkit.methods.stages.della` for what a row is.

    Args:
        experts: N (S) float32 tensors.
        base: (S) float32 base tensor.
        weights: N weights.
        seeds: N expert seeds.
        density: per-expert mean keep probability.
        epsilon: spread of the keep probabilities.
        **params: ``lambda``.

    Returns:
        (S) float32 tensor.
    """
    return _della_merge(experts, base, weights, seeds, density, epsilon, params, disjoint=True)


def della_linear(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int],
    density: float | Sequence[float] = 0.5,
    epsilon: float = 0.15,
    **params: Any,
) -> torch.Tensor:
    """As :func:`della`, but combined by ``Σ w_i d̃_i`` (task arithmetic).

    Args: as :func:`della`.

    Returns:
        (S) float32 tensor.
    """
    return _della_merge(experts, base, weights, seeds, density, epsilon, params, disjoint=False)


_PARAMS = (density_spec(0.5, high_open=True), EPSILON, LAMBDA)
METHODS.add(
    "della",
    MethodSpec(
        name="della",
        fn=della,
        summary="drop task-vector entries with magnitude-ranked probabilities, then TIES sign election",
        paper=DEEP,
        params=_PARAMS,
        randomized=True,
        normalizes_weights=lambda params: True,
        check_params=check_della,
    ),
)
METHODS.add(
    "della_linear",
    MethodSpec(
        name="della_linear",
        fn=della_linear,
        summary="drop task-vector entries with magnitude-ranked probabilities, then task arithmetic",
        paper=DEEP,
        params=_PARAMS,
        randomized=True,
        check_params=check_della,
    ),
)
