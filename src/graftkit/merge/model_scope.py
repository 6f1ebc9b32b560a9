"""TIES' trim ranked over the whole model (``trim_scope: model``, as in Yadav et al. 2023).

Per expert i, the trim keeps the ``k_i = max(1, floor(density_i · n_i))`` entries with the
largest ``|d_i|`` among all ``n_i`` entries of every merged tensor, not per tensor. A streaming
merge cannot sort a model, so the cutoff (the k-th largest ``|d|``) is found by a radix select on
the float32 bit patterns of ``|d|``, which order like the values because the sign bit is clear:
one read of every input histograms the high 16 bits, a second histograms the low 16 bits of the
entries in the bin that holds the k-th value. Entries tied at the cutoff are kept in tensor-name
order, then row-major order, until exactly ``k_i`` are kept. The merge itself is a third read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from graftkit.merge.plan import TensorJob
from graftkit.methods.params import keep_count

_HI = 1 << 15  # bits >> 16 of a non-negative float32 lies in [0, 2**15)
_LO = 1 << 16

Deltas = Callable[[TensorJob], list[torch.Tensor]]
"""A job's task vectors ``x_i − b`` in float32, one per expert of ``job.experts``."""


@dataclass(frozen=True)
class ModelCutoffs:
    """Per expert, the model-wide cutoff, and per tensor how many entries tied at it to keep.

    Attributes:
        cutoff: expert index → the k-th largest ``|d|`` over the model (−1: keep everything).
        tied: tensor name → expert index → entries equal to the cutoff that this tensor keeps.
    """

    cutoff: dict[int, float]
    tied: dict[str, dict[int, int]]

    def params(self, job: TensorJob) -> dict[str, tuple[float, ...] | tuple[int, ...]]:
        """The ``cutoff`` and ``tied_keep`` parameters of :func:`graftkit.methods.ties.ties` for one job."""
        tied = self.tied.get(job.name, {})
        return {
            "cutoff": tuple(self.cutoff[i] for i in job.experts),
            "tied_keep": tuple(tied.get(i, 0) for i in job.experts),
        }


def ranking_reads(jobs: Sequence[TensorJob], trim_scope: object) -> list[TensorJob]:
    """The jobs read before merging (each twice) when ``trim_scope`` is ``model``, else none."""
    return [j for j in jobs if j.merge] if trim_scope == "model" else []


def _bits(d: torch.Tensor) -> torch.Tensor:
    return d.abs().reshape(-1).view(torch.int32)


def model_cutoffs(
    jobs: Sequence[TensorJob],
    densities: Sequence[float],
    deltas: Deltas,
    on_job: Callable[[TensorJob], None] | None = None,
) -> ModelCutoffs:
    """Find every expert's model-wide trim cutoff with two reads of the merged tensors.

    Args:
        jobs: the plan's jobs (those with ``merge`` set are ranked).
        densities: per expert (by index), the fraction of its entries to keep.
        deltas: reads one job's task vectors.
        on_job: called after each job of each read (progress).
    """
    done = on_job or (lambda job: None)
    jobs = sorted(ranking_reads(jobs, "model"), key=lambda j: j.name)
    n = len(densities)
    totals, high = [0] * n, torch.zeros(n, _HI, dtype=torch.int64)
    for job in jobs:
        for i, d in zip(job.experts, deltas(job), strict=True):
            high[i] += torch.bincount(_bits(d) >> 16, minlength=_HI)
            totals[i] += d.numel()
        done(job)
    ks = [keep_count(densities[i], totals[i]) for i in range(n)]
    picked = [_select(high[i], ks[i]) if ks[i] < totals[i] else None for i in range(n)]

    low = torch.zeros(n, _LO, dtype=torch.int64)
    at_bin: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    for job in jobs:
        for i, d in zip(job.experts, deltas(job), strict=True):
            if picked[i] is None:
                continue
            bits = _bits(d)
            inside = bits[(bits >> 16) == picked[i][0]] & (_LO - 1)
            low[i] += torch.bincount(inside, minlength=_LO)
            at_bin.setdefault(job.name, {})[i] = torch.unique(inside, return_counts=True)
        done(job)

    cutoff: dict[int, float] = {}
    tied: dict[str, dict[int, int]] = {}
    for i in range(n):
        if picked[i] is None:
            cutoff[i] = -1.0
            continue
        hi, above_bin = picked[i]
        lo, above = _select(low[i], ks[i] - above_bin)
        cutoff_bits = (hi << 16) | lo
        cutoff[i] = float(torch.tensor([cutoff_bits], dtype=torch.int32).view(torch.float32))
        remaining = ks[i] - above_bin - above
        for job in jobs:  # hand out the entries tied at the cutoff in name order
            if remaining == 0:
                break
            values, counts = at_bin.get(job.name, {}).get(i, (torch.empty(0), torch.empty(0)))
            here = int(counts[values == lo].sum()) if values.numel() else 0
            take = min(here, remaining)
            if take:
                tied.setdefault(job.name, {})[i] = take
                remaining -= take
    return ModelCutoffs(cutoff, tied)


def _select(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest entry of a histogram, and how many entries lie above it."""
    from_top = hist.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, torch.tensor(k, dtype=torch.int64)))
    bin_index = hist.numel() - 1 - position
    return bin_index, int(from_top[position]) - int(hist[bin_index])
