"""Spherical linear interpolation of two models (Shoemake 1985, "Animating rotation with
quaternion curves", SIGGRAPH '85, https://doi.org/10.1145/325165.325242)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from graftkit.methods.params import T
from graftkit.methods.spec import METHODS, MethodSpec

# Below this norm a tensor has no direction; above this |cos ω| the arc is a line.
NORM_EPS = 1e-8
COLLINEAR = 0.9995


def slerp(
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None = None,
    weights: Sequence[float] = (),
    seeds: Sequence[int] = (),
    t: float = 0.5,
) -> torch.Tensor:
    """``θ = sin((1−t)ω)/sin ω · x_0 + sin(tω)/sin ω · x_1``, each whole tensor one vector.

    ``cos ω = u_0 · u_1`` for the unit vectors ``u_i = x_i / |x_i|``. Falls back to
    ``(1−t) x_0 + t x_1`` when ``|cos ω| > 0.9995`` or either norm is below 1e-8. ``t = 0``
    returns (a copy of) ``x_0`` and ``t = 1`` of ``x_1`` exactly.

    Args:
        experts: exactly two (S) float32 tensors ``x_0, x_1``, in recipe order.
        base: ignored.
        weights: ignored (``t`` sets the mix).
        seeds: ignored.
        t: position in [0, 1].

    Returns:
        (S) float32 tensor.
    """
    if len(experts) != 2:
        raise ValueError(f"slerp takes exactly 2 models, got {len(experts)}")
    if not 0 <= t <= 1:
        raise ValueError(f"slerp t must lie in [0, 1], got {t}")
    x0, x1 = experts
    if t == 0:
        return x0.clone()
    if t == 1:
        return x1.clone()
    n0 = float(torch.linalg.vector_norm(x0))
    n1 = float(torch.linalg.vector_norm(x1))
    if n0 < NORM_EPS or n1 < NORM_EPS:
        return torch.lerp(x0, x1, t)
    cos = float(torch.dot(x0.reshape(-1), x1.reshape(-1))) / (n0 * n1)
    if not abs(cos) <= COLLINEAR:  # also catches a NaN from inf/nan inputs
        return torch.lerp(x0, x1, t)
    omega = math.acos(cos)
    sin_omega = math.sin(omega)
    c0 = math.sin((1 - t) * omega) / sin_omega
    c1 = math.sin(t * omega) / sin_omega
    return (x0 * c0).add_(x1, alpha=c1)


METHODS.add(
    "slerp",
    MethodSpec(
        name="slerp",
        fn=slerp,
        summary="spherical interpolation of exactly two models at position t",
        paper="Shoemake 1985, Animating rotation with quaternion curves, https://doi.org/10.1145/325165.325242",
        params=(T,),
        needs_base=False,
        min_models=2,
        max_models=2,
        accepts_dare=False,
    ),
)
