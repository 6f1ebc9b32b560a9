"""The distribution of an expert's |delta| from its base, for DARE's applicability diagnostic.

DARE (Yu et al. 2023, arXiv 2311.03099, §4.4) works when fine-tuning moved every parameter only a
little (|δ| mostly below about 0.005) and fails when an expert was trained far from its base. The
whole-model mean is what ``graft inspect`` judges (:data:`~graftkit.evaluate.inspect_deltas.DARE_RULE`);
this module gives the whole distribution behind it, streamed one tensor at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from graftkit.io import Checkpoint

EDGES: tuple[float, ...] = tuple(10.0 ** (e / 2) for e in range(-18, 1))
"""Bin edges of |δ|: half-decades from 1e-9 to 1. Entries below the first edge (exact zeros
included) fall in an underflow bin, entries at or above the last in an overflow bin."""


def delta_histogram(base: str | Path, expert: str | Path, edges: Sequence[float] = EDGES) -> dict[str, Any]:
    """Count the expert's |δ| = |expert − base| entries per bin, over every shared float tensor.

    Args:
        base: the base model folder or weights file.
        expert: a fine-tune of it (same architecture).
        edges: increasing bin edges; ``counts`` has ``len(edges) + 1`` entries: ``[< edges[0],
            [edges[0], edges[1]), ..., >= edges[-1]]``.

    Returns:
        ``{"edges", "counts", "numel", "mean_abs", "above": {"0.002": share, "0.005": share}}``.
    """
    bounds = torch.tensor(list(edges), dtype=torch.float32)
    counts = torch.zeros(len(edges) + 1, dtype=torch.int64)
    abs_sum, numel = 0.0, 0
    above = dict.fromkeys((0.002, 0.005), 0)
    with Checkpoint.open(base) as b, Checkpoint.open(expert) as e:
        for name, info in b.tensors.items():
            other = e.tensors.get(name)
            if not info.dtype.is_floating_point or other is None or other.shape != info.shape:
                continue
            delta = (e.read(name).float() - b.read(name).float()).abs().view(-1)  # (S)
            counts += torch.bincount(torch.bucketize(delta, bounds, right=True), minlength=len(counts))
            abs_sum += float(delta.sum(dtype=torch.float64))
            numel += delta.numel()
            for level in above:
                above[level] += int((delta > level).sum())
    return {
        "edges": list(edges),
        "counts": counts.tolist(),
        "numel": numel,
        "mean_abs": abs_sum / numel if numel else 0.0,
        "above": {str(level): (count / numel if numel else 0.0) for level, count in above.items()},
    }
