"""One tensor's bytes in a file as a tensor, through a memory map (no copy, no allocation).

Used to read input tensors (private, copy-on-write maps) and to compute output tensors straight
into their place in a shard (shared maps). With ``populate`` the pages are faulted in up front
(``MADV_POPULATE_READ`` / ``MADV_POPULATE_WRITE``, Linux ≥ 5.14), so a read-ahead thread can pay
the page-fault cost on another core instead of the thread that does the math.
"""

from __future__ import annotations

import contextlib
import mmap

import torch

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def map_tensor(
    fd: int,
    offset: int,
    nbytes: int,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    *,
    shared: bool,
    populate: bool = False,
) -> torch.Tensor:
    """Map ``nbytes`` at ``offset`` of ``fd`` as a tensor of ``shape`` and ``dtype``.

    Args:
        shared: writes reach the file (an output place); otherwise they go to private pages.
        populate: fault every page in now (best effort: ignored where the kernel lacks it).
    """
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    access = mmap.ACCESS_WRITE if shared else mmap.ACCESS_COPY
    mapped = mmap.mmap(fd, offset + nbytes - start, offset=start, access=access)
    if populate:
        _populate(mapped, MADV_POPULATE_WRITE if shared else MADV_POPULATE_READ)
    flat = torch.frombuffer(mapped, dtype=torch.uint8, count=nbytes, offset=offset - start)
    return flat.view(dtype).view(shape)


def _populate(mapped: mmap.mmap, advice: int) -> None:
    madvise = getattr(mapped, "madvise", None)
    if madvise is None:
        return
    with contextlib.suppress(OSError):  # kernel older than 5.14, or not Linux
        madvise(advice)
