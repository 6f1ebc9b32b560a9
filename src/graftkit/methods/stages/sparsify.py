"""Sparsifiers: zero some entries of one task vector ``d`` and rescale the rest.

Each takes the delta of one expert for one tensor, which the caller owns, and may modify it in
place; each returns the sparsified delta (same shape, float32). Magnitude ranks use one total
order everywhere: larger ``|d|`` first, and among equal ``|d|`` the lower row-major index first.
"""

from __future__ import annotations

import torch

from graftkit.methods.params import count, keep_count
from graftkit.methods.rng import uniform

# DELLA sorts rows in blocks of about this many entries, to bound the sort's extra memory.
_DELLA_BLOCK = 1 << 24


_SELECT_DIRECT = 1 << 20  # below this many entries, plain kthvalue is fast enough
_SAMPLE = 1 << 16


def kth_largest(a: torch.Tensor, k: int) -> torch.Tensor:
    """The exact k-th largest value of a 1-D tensor (0-D tensor result).

    ``torch.kthvalue`` is a single-threaded quickselect over a copy. For large tensors this
    brackets the target rank with a strided sample, checks the bracket by counting (vectorised,
    multi-threaded), and runs ``kthvalue`` only on the few candidates inside it; when the sample
    misleads (the count check fails) it falls back to ``kthvalue`` on everything, so the result
    is always exact.
    """
    n = a.numel()
    position = n - k  # 0-based ascending rank of the answer
    if n <= _SELECT_DIRECT:
        return a.kthvalue(position + 1).values
    sample = a[:: n // _SAMPLE].sort().values  # (≈ _SAMPLE,)
    s = sample.numel()
    centre = position * s // n
    margin = 64 + int(4 * s**0.5)
    lo = sample[centre - margin] if centre - margin > 0 else a.new_tensor(float("-inf"))
    hi = sample[centre + margin] if centre + margin < s - 1 else a.new_tensor(float("inf"))
    below = int(torch.count_nonzero(a < lo))
    candidates = a[(a >= lo) & (a <= hi)]
    if below <= position < below + candidates.numel():
        return candidates.kthvalue(position - below + 1).values
    return a.kthvalue(position + 1).values


def top_magnitude_mask(a: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` largest entries of ``a`` (ties: lower index first).

    Args:
        a: (n,) non-negative magnitudes.
        k: how many entries to select.

    Returns:
        (n,) bool mask. When the k-th largest value is 0, the mask holds only the non-zero
        entries (fewer than ``k``): which zeros are "kept" cannot change any result, and not
        listing them avoids indexing every zero of an untouched tensor.
    """
    n = a.numel()
    if k >= n:
        return torch.ones_like(a, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(a, dtype=torch.bool)
    v = kth_largest(a, k)
    mask = a > v
    need = k - int(torch.count_nonzero(mask))
    if need > 0 and v > 0:
        ties = (a == v).nonzero().squeeze(1)[:need]  # ascending indices
        mask[ties] = True
    return mask


def _check_rescale(d: torch.Tensor, rescale: str) -> torch.Tensor:
    if rescale != "none":
        raise ValueError(f"rescale must be paper, none or l1, got {rescale!r}")
    return d


def _apply(d: torch.Tensor, keep: torch.Tensor, density: float, rescale: str) -> torch.Tensor:
    """Zero ``d`` outside ``keep`` (in place) and rescale what is kept."""
    l1 = d.abs().sum() if rescale == "l1" else None
    d.masked_fill_(keep.logical_not_(), 0.0)
    if rescale == "paper":
        d.div_(density)
    elif rescale == "l1":
        kept_l1 = d.abs().sum()
        if kept_l1 > 0:
            d.mul_(l1 / kept_l1)
    elif rescale != "none":
        raise ValueError(f"rescale must be paper, none or l1, got {rescale!r}")
    return d


def magnitude(d: torch.Tensor, *, density: float, rescale: str = "none") -> torch.Tensor:
    """Keep the ``k = max(1, floor(density · n))`` largest-``|d|`` entries of the tensor.

    This is TIES' trim step (with ``rescale="none"``) and the magnitude-pruning baseline of
    Yu et al. 2023 (https://arxiv.org/abs/2311.03099).

    Args:
        d: task vector, any shape with n entries, contiguous; modified in place.
        density: fraction kept, in (0, 1].
        rescale: ``none``, ``paper`` (×1/density) or ``l1`` (restore the L1 norm).
    """
    n = d.numel()
    k = keep_count(density, n)
    if k >= n:
        return d
    magnitudes = d.abs()  # (S)
    flat = magnitudes.view(-1)
    cutoff = kth_largest(flat, k)
    if cutoff > 0 and rescale != "l1":
        tied = (flat == cutoff).nonzero().squeeze(1)  # ascending indices of entries at the cutoff
        keep = magnitudes.ge_(cutoff)  # (S) 1.0 / 0.0, in place
        excess = int(torch.count_nonzero(keep)) - k
        if excess > 0:  # ties at the cutoff: the lower indices stay, the last `excess` go
            keep.view(-1)[tied[tied.numel() - excess :]] = 0.0
        d.mul_(keep)
        return d.div_(density) if rescale == "paper" else _check_rescale(d, rescale)
    keep = top_magnitude_mask(magnitudes.view(-1), k).view(d.shape)
    return _apply(d, keep, density, rescale)


def above_cutoff(d: torch.Tensor, *, cutoff: float, tied_keep: int) -> torch.Tensor:
    """Keep the entries with ``|d| > cutoff`` and the first ``tied_keep`` (row-major) with ``|d| == cutoff``.

    TIES' trim with a threshold ranked over the whole model (``trim_scope: model``): the caller
    finds ``cutoff``, the k-th largest ``|d|`` over every tensor of the expert, and hands each
    tensor its share of the entries tied at it, so exactly k entries survive model-wide.

    Args:
        d: task vector, any shape, contiguous; modified in place.
        cutoff: the model-wide k-th largest magnitude; negative keeps everything.
        tied_keep: how many entries equal to ``cutoff`` this tensor keeps.
    """
    if cutoff < 0:
        return d
    magnitudes = d.abs().view(-1)
    keep = magnitudes > cutoff
    if tied_keep > 0:
        tied = (magnitudes == cutoff).nonzero().squeeze(1)
        keep[tied[:tied_keep]] = True
    return d.mul_(keep.view(d.shape))


def dare(d: torch.Tensor, *, density: float, seed: int, rescale: str = "paper") -> torch.Tensor:
    """DARE (Yu et al. 2023, https://arxiv.org/abs/2311.03099): drop entries at random.

    Each entry is kept by an independent Bernoulli(``density``) draw from stream ``"dare"`` of
    ``seed``; kept entries are rescaled by ``rescale`` (``paper``: ×1/density, so E[d̃] = d).

    Args:
        d: task vector, any shape; modified in place.
        density: keep probability in (0, 1]; 1 returns ``d`` unchanged.
        seed: the expert seed for this tensor.
        rescale: ``paper``, ``none`` or ``l1``.
    """
    if density >= 1:
        return d
    if rescale == "l1":
        keep = uniform(d.shape, seed, stream="dare", device=d.device) < density
        return _apply(d, keep, density, rescale)
    keep = uniform(d.shape, seed, stream="dare", device=d.device).lt_(density)  # (S) 1.0 kept / 0.0, in place
    d.mul_(keep)
    return d.div_(density) if rescale == "paper" else _check_rescale(d, rescale)


def breadcrumbs(d: torch.Tensor, *, density: float, gamma: float) -> torch.Tensor:
    """Model Breadcrumbs (Davari & Belilovsky 2024, https://arxiv.org/abs/2312.06795).

    Keeps ``k = max(1, floor(density · n))`` entries: those ranked just below the
    ``floor(gamma · n)`` largest ``|d|`` (the outliers, dropped; none when gamma · n < 1). When
    outliers and kept entries together exceed ``n``, fewer outliers are dropped, so ``density``
    always holds (``density = 1`` returns ``d`` unchanged) and a tensor is never zeroed whole.
    No rescaling.

    Args:
        d: task vector, any shape, contiguous; modified in place.
        density: fraction of entries kept, in (0, 1].
        gamma: fraction of entries dropped as outliers, in [0, 1).
    """
    n = d.numel()
    k = keep_count(density, n)
    n_top = min(count(gamma, n), n - k)  # outliers give way to the kept fraction
    if k >= n:
        return d
    a = d.abs().view(-1)
    keep = top_magnitude_mask(a, n_top + k)
    if n_top > 0:
        keep &= ~top_magnitude_mask(a, n_top)
    return _apply(d, keep.view(d.shape), density, "none")


def _rows(d: torch.Tensor) -> torch.Tensor:
    """DELLA's rows: (shape[0], rest) for ≥2-D tensors, one row for 0-D and 1-D tensors."""
    return d.reshape(d.shape[0], -1) if d.dim() >= 2 else d.reshape(1, -1)


def della_probabilities(d: torch.Tensor, *, density: float, epsilon: float) -> torch.Tensor:
    """Keep probabilities ``p_j = density - ε + 2ε · r_j`` of DELLA's MagPrune.

    ``r_j`` is the rank of ``|d_j|`` within its row scaled to [0, 1] (largest → 1, smallest → 0;
    ties: lower index ranks higher); a row of one entry gets ``r = 0.5``, i.e. ``p = density``,
    so every row's mean keep probability is ``density``.

    Args:
        d: task vector, any shape (rows as in :func:`della`).
        density: mean keep probability; ``density ± epsilon`` must lie in (0, 1).
        epsilon: half-width of the probability range, ≥ 0.

    Returns:
        float32 tensor of ``d``'s shape with values in [density - ε, density + ε].
    """
    if not (density - epsilon > 0 and density + epsilon < 1):
        raise ValueError(f"density ± epsilon must lie in (0, 1), got {density} ± {epsilon}")
    if d.numel() == 0:
        return torch.empty_like(d)
    rows = _rows(d)  # (R, M)
    m = rows.shape[1]
    if m == 1:
        return torch.full_like(d, density)
    # p by descending rank q = 0..M-1, computed on the CPU so every device gets the same bytes.
    p_by_rank = torch.linspace(density + epsilon, density - epsilon, m, dtype=torch.float32)
    p_by_rank = p_by_rank.to(d.device)
    p = torch.empty_like(rows)  # (R, M)
    block = max(1, _DELLA_BLOCK // m)
    for start in range(0, rows.shape[0], block):
        part = rows[start : start + block].abs()  # (B, M)
        order = part.sort(dim=1, descending=True, stable=True).indices  # (B, M)
        p[start : start + block].scatter_(1, order, p_by_rank.expand_as(part))
    return p.view(d.shape)


def della(d: torch.Tensor, *, density: float, epsilon: float, seed: int) -> torch.Tensor:
    """DELLA's MagPrune (Deep et al. 2024, https://arxiv.org/abs/2406.11617).

    Keeps entry j with probability ``p_j`` from :func:`della_probabilities` (draws from stream
    ``"della"`` of ``seed``) and rescales kept entries by ``1/p_j``, so E[d̃] = d.

    Rows: a 2-D (out, in) tensor has ``out`` rows of ``in`` entries; tensors with more dims are
    flattened to (shape[0], -1) (one row per output channel); 0-D and 1-D tensors are one row.

    Args:
        d: task vector, any shape; modified in place.
        density: mean keep probability.
        epsilon: spread of the probabilities around ``density``.
        seed: the expert seed for this tensor.
    """
    p = della_probabilities(d, density=density, epsilon=epsilon)
    keep = uniform(d.shape, seed, stream="della", device=d.device) < p
    d.div_(p).masked_fill_(keep.logical_not_(), 0.0)
    return d
