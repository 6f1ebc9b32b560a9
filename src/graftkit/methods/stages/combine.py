"""Task vectors, sign election, the two ways to combine deltas, and ``θ = b + λ · m``.

All tensors here are float32 of one shape ``S``; "N" is the number of experts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

Sparsifier = Callable[[torch.Tensor, int], torch.Tensor]
"""``(d_i, i) -> d̃_i``: sparsifies expert i's delta (which it may modify in place)."""


def task_vectors(
    experts: Sequence[torch.Tensor], base: torch.Tensor, sparsify: Sparsifier | None = None
) -> Iterator[torch.Tensor]:
    """Yield ``d_i = x_i - b`` (each a new (S) tensor), sparsified when ``sparsify`` is given.

    A generator, so a weighted sum holds two deltas at a time rather than N.
    """
    for i, x in enumerate(experts):
        d = x - base  # (S), owned by the caller from here on
        yield d if sparsify is None else sparsify(d, i)


def weighted_sum(deltas: Iterable[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``m = Σ w_i d_i``; accumulates into the first delta (modified in place)."""
    m: torch.Tensor | None = None
    for d, w in zip(deltas, weights, strict=True):
        if m is None:
            m = d if w == 1 else d.mul_(w)
        else:
            m.add_(d, alpha=w)
    if m is None:
        raise ValueError("no experts to merge")
    return m


def elect_sign(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES' sign election: ``s = sign(Σ_i w_i d̂_i)`` with an exact zero sum electing +1.

    Returns:
        (S) bool tensor, True where the elected sign is +1.
    """
    return _weighted_total(deltas, weights) >= 0


def _weighted_total(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``Σ_i w_i d̂_i`` in a new (S) tensor."""
    total = torch.zeros_like(deltas[0])  # (S)
    for d, w in zip(deltas, weights, strict=True):
        total.add_(d, alpha=w)
    return total


def disjoint_mean(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES steps 2–3 (Yadav et al. 2023, https://arxiv.org/abs/2306.01708).

    Elects a sign per entry (:func:`elect_sign`), then averages over the experts whose delta is
    non-zero with the elected sign: ``m = Σ_{i∈A} w_i d̂_i / Σ_{i∈A} w_i``. Where A is empty, or
    where its weights sum to 0 (possible only with negative weights), ``m = 0``.

    Args:
        deltas: N (S) deltas; modified in place (entries of the other sign are zeroed).
        weights: N weights.

    Returns:
        (S) float32 tensor ``m``.
    """
    sign = _weighted_total(deltas, weights).ge_(0).mul_(2).sub_(1)  # (S) elected sign ±1, in place
    num: torch.Tensor | None = None  # (S) Σ_{i∈A} w_i |d̂_i|, accumulated in the first delta's storage
    den: torch.Tensor | None = None  # (S) Σ_{i∈A} w_i
    for d, w in zip(deltas, weights, strict=True):
        # d·s > 0 exactly where expert i agrees; clamping keeps |d̂_i| there and 0 elsewhere.
        agreeing = d.mul_(sign).clamp_(min=0.0)  # (S), in place
        if num is None:
            den = torch.sign(agreeing).mul_(w)  # 1.0 where i ∈ A, then × w_i
            num = agreeing.mul_(w)
        else:
            num.add_(agreeing, alpha=w)
            den.add_(agreeing.sign_(), alpha=w)  # agreeing is no longer needed: reuse it
    assert num is not None and den is not None
    num.mul_(sign)  # sign flips are exact, so this equals Σ_{i∈A} w_i d̂_i
    if all(w > 0 for w in weights):
        # den is 0 exactly where A is empty, and there num is 0 too: any positive floor gives 0.
        return num.div_(den.clamp_(min=torch.finfo(den.dtype).tiny))
    empty = den == 0
    return num.div_(den.masked_fill_(empty, 1.0)).masked_fill_(empty, 0.0)


def combine(m: torch.Tensor, base: torch.Tensor, lam: float) -> torch.Tensor:
    """``θ = b + λ · m``, computed in ``m``'s storage."""
    if lam != 1:
        m.mul_(lam)
    return m.add_(base)


def merge_task_vectors(
    experts: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    weights: Sequence[float],
    *,
    lam: float = 1.0,
    sparsify: Sparsifier | None = None,
    disjoint: bool = False,
) -> torch.Tensor:
    """The task-vector pipeline every base-model method is a configuration of.

    Args:
        experts: N (S) float32 tensors ``x_i``.
        base: (S) float32 base tensor ``b``.
        weights: N weights ``w_i``.
        lam: global scale λ.
        sparsify: optional per-expert sparsifier applied to each ``d_i``.
        disjoint: combine with TIES' sign election and disjoint mean instead of ``Σ w_i d_i``.

    Returns:
        (S) float32 merged tensor ``b + λ · m``.
    """
    if base is None:
        raise ValueError("this method needs a base model")
    if len(weights) != len(experts):
        raise ValueError(f"{len(weights)} weights for {len(experts)} experts")
    deltas = task_vectors(experts, base, sparsify)
    m = disjoint_mean(list(deltas), weights) if disjoint else weighted_sum(deltas, weights)
    return combine(m, base, lam)
