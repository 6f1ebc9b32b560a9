"""TIES-merging (Yadav et al. 2023, https://arxiv.org/abs/2306.01708): trim, elect sign,
disjoint mean."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from graftkit.methods.params import LAMBDA, TRIM_SCOPE, density_spec, per_expert, pop_lambda
from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import above_cutoff, magnitude, merge_task_vectors

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
        trim_scope: ``tensor`` (rank within each tensor) or ``model`` (rank over each expert's
            whole model, as in the paper: then ``params`` carries per-expert ``cutoff`` and
            ``tied_keep``, found by :mod:`graftkit.merge.model_scope`, and ``density`` is unused here).
        **params: ``lambda`` (and ``cutoff``, ``tied_keep`` for the model scope).

    Returns:
        (S) float32 tensor.
    """
    if trim_scope == "model":
        sparsify = _model_trim(params, len(experts))
    elif trim_scope == "tensor":
        dens = per_expert(density, len(experts), "density")

        def sparsify(d: torch.Tensor, i: int) -> torch.Tensor:
            return magnitude(d, density=dens[i])
    else:
        raise ValueError(f"trim_scope must be 'tensor' or 'model', got {trim_scope!r}")
    return merge_task_vectors(experts, base, weights, lam=pop_lambda(params), sparsify=sparsify, disjoint=True)


def _model_trim(params: dict[str, Any], n: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The trim for ``trim_scope: model``: per expert, a cutoff the merge found over the whole model."""
    cutoffs, tied = params.pop("cutoff", None), params.pop("tied_keep", None)
    if cutoffs is None or tied is None:
        raise ValueError(
            "trim_scope 'model' ranks entries over the whole model, so it needs the per-expert `cutoff` and "
            "`tied_keep` that graftkit.merge / merge_state_dicts compute; a single tensor cannot supply them"
        )
    cutoffs, tied = per_expert(cutoffs, n, "cutoff"), per_expert(tied, n, "tied_keep")
    return lambda d, i: above_cutoff(d, cutoff=float(cutoffs[i]), tied_keep=int(tied[i]))


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
