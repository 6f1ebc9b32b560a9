"""Study grids: the cartesian product of named axes, and seeded subsets of a pool of experts."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any


def expand(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the first axis varying slowest.

    Example:
        ``expand({"method": ["ties", "dare"], "k": [2, 4]})`` gives
        ``[{"method": "ties", "k": 2}, {"method": "ties", "k": 4}, {"method": "dare", "k": 2}, ...]``.
        No axes give one empty point ``[{}]``; an empty axis gives no points.
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[name] for name in names))]


def pick_subsets(pool: Sequence[str], k: int, seeds: Sequence[int]) -> dict[int, tuple[str, ...]]:
    """For each seed, a random ``k``-subset of ``pool``, listed in pool order.

    Each draw is seeded by ``"subset/{k}/{seed}"`` alone, so a subset does not change when the
    pool's other sizes or seeds are added to a study. With ``k == len(pool)`` every seed gets the
    whole pool. Subsets of different seeds are independent draws and may coincide.

    Raises:
        ValueError: ``k`` is outside ``0..len(pool)`` or the pool repeats a name.
    """
    if len(set(pool)) != len(pool):
        raise ValueError(f"pool repeats a name: {list(pool)}")
    if not 0 <= k <= len(pool):
        raise ValueError(f"cannot pick {k} of a pool of {len(pool)}")
    subsets: dict[int, tuple[str, ...]] = {}
    for seed in seeds:
        chosen = random.Random(f"subset/{k}/{seed}").sample(range(len(pool)), k)
        subsets[seed] = tuple(pool[i] for i in sorted(chosen))
    return subsets
