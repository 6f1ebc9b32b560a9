"""Parameter specs shared by several methods, and helpers to read resolved values.

One name per idea across all methods (see specs/methods.md): ``density`` is the fraction of
delta entries kept, ``lambda`` the global scale, ``rescale`` how kept entries are rescaled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from graftkit.methods.spec import ParamSpec

RESCALE_CHOICES = ("paper", "none", "l1")


def density_spec(default: float, *, high_open: bool = False) -> ParamSpec:
    """Per-expert ``density`` in (0, 1] (or (0, 1) when ``high_open``) with ``default``."""
    return ParamSpec(
        "density",
        float,
        default,
        "fraction of each task vector's entries kept (drop_rate = 1 - density)",
        per_expert=True,
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=high_open,
    )


def rescale_spec(default: str) -> ParamSpec:
    """``rescale`` of kept entries: ``paper`` (×1/density), ``none``, ``l1`` (keep the L1 norm)."""
    return ParamSpec(
        "rescale",
        str,
        default,
        "rescaling of kept entries: paper (x 1/density), none, or l1 (restore the L1 norm)",
        choices=RESCALE_CHOICES,
    )


LAMBDA = ParamSpec("lambda", float, 1.0, "global scale applied to the combined task vector")
NORMALIZE = ParamSpec("normalize", bool, True, "divide by the sum of the weights")
T = ParamSpec("t", float, 0.5, "interpolation position: 0 gives the first model, 1 the second", low=0, high=1)
GAMMA = ParamSpec(
    "gamma",
    float,
    0.01,
    "fraction of largest-magnitude delta entries dropped as outliers (none when gamma*n < 1)",
    per_expert=True,
    low=0.0,
    high=1.0,
    high_open=True,
)
EPSILON = ParamSpec(
    "epsilon",
    float,
    0.15,
    "spread of keep probabilities around density (density +/- epsilon must lie in (0, 1))",
    low=0.0,
    high=0.5,
    high_open=True,
)
TRIM_SCOPE = ParamSpec(
    "trim_scope",
    str,
    "tensor",
    "where the magnitude trim ranks entries: within each tensor, or over the expert's whole model "
    "(the paper's TIES; two extra reads of every input)",
    choices=("tensor", "model"),
)


def per_expert(value: Any, n: int, name: str) -> tuple[Any, ...]:
    """Broadcast a scalar to ``n`` values, or check that a sequence has ``n`` values."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values for {n} experts")
        return tuple(value)
    return (value,) * n


def pop_lambda(extra: dict[str, Any]) -> float:
    """Read ``lambda`` (a Python keyword, so it arrives in ``**params``) and reject any other key."""
    lam = extra.pop("lambda", 1.0)
    if extra:
        raise TypeError(f"unexpected parameters: {', '.join(sorted(extra))}")
    return float(lam)


def count(fraction: float, n: int) -> int:
    """``floor(fraction * n)``, after rounding the product to 6 decimals.

    The rounding makes ``count(0.29, 100)`` 29 rather than 28 (0.29 * 100 is 28.999999999999996
    in binary floating point).
    """
    return math.floor(round(fraction * n, 6))


def keep_count(density: float, n: int) -> int:
    """Entries a magnitude trim keeps: ``k = max(1, floor(density * n))``, at most ``n``."""
    return min(n, max(1, count(density, n)))
