"""Model Stock (Jang et al. 2024, https://arxiv.org/abs/2403.19522): move from the base towards
the experts' mean by a ratio set by how aligned their task vectors are."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import task_vectors

JANG = "Jang et al. 2024, Model Stock, https://arxiv.org/abs/2403.19522"


def mean_pairwise_cosine(deltas: Sequence[torch.Tensor]) -> float:
    """Mean over pairs i < j of ``cos(d_i, d_j)``, each tensor flattened.

    A pair involving an all-zero delta (no direction) counts as cosine 0.
    """
    flat = [d.reshape(-1) for d in deltas]
    norms = [float(torch.linalg.vector_norm(d)) for d in flat]
    cosines = []
    for i, j in itertools.combinations(range(len(flat)), 2):
        den = norms[i] * norms[j]
        cosines.append(float(torch.dot(flat[i], flat[j])) / den if den > 0 else 0.0)
    return sum(cosines) / len(cosines)


def interpolation_ratio(c: float, n: int) -> float:
    """``t = N c / (1 + (N − 1) c)``, with ``c`` clamped to [0, 1] so that ``t`` is in [0, 1].

    The formula is meant for aligned experts (c ≥ 0); for c < 0 it gives a negative ratio and
    at ``c = −1/(N−1)`` divides by zero, so anti-aligned experts give ``t = 0`` (the base).
    """
    c = min(max(c, 0.0), 1.0)
    return n * c / (1 + (n - 1) * c)


def model_stock(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float] = (),
    seeds: Sequence[int] = (),
) -> torch.Tensor:
    """``θ = b + t · (mean_i x_i − b)`` with ``t`` from the mean pairwise cosine of the deltas.

    Args:
        experts: N ≥ 2 (S) float32 tensors.
        base: (S) float32 base tensor.
        weights: ignored (the method uses the plain mean).
        seeds: ignored.

    Returns:
        (S) float32 tensor.
    """
    if base is None:
        raise ValueError("model_stock needs a base model")
    if len(experts) < 2:
        raise ValueError(f"model_stock needs at least 2 experts, got {len(experts)}")
    deltas = list(task_vectors(experts, base))  # N × (S)
    t = interpolation_ratio(mean_pairwise_cosine(deltas), len(deltas))
    mean = deltas[0]
    for d in deltas[1:]:
        mean.add_(d)
    return mean.mul_(t / len(deltas)).add_(base)


METHODS.add(
    "model_stock",
    MethodSpec(
        name="model_stock",
        fn=model_stock,
        summary="move from the base towards the experts' mean by a ratio set by their cosine",
        paper=JANG,
        needs_base=True,
        min_models=2,
        dense=True,
    ),
)
