"""One tensor's bytes in a file as a tensor, through a memory map (no copy, no allocation).

Used to read input tensors (private, copy-on-write maps: writes never reach the file) and to
compute output tensors straight into their place in a shard (shared maps). Pages are mapped as
the tensor is used. (Faulting them in up front on the read-ahead thread with
``MADV_POPULATE_READ``/``_WRITE`` was tried: linear merges were no faster and peak RSS grew by
1 GiB, see docs/LOG.md.)
"""

from __future__ import annotations

import mmap

import torch


def map_tensor(
    fd: int, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...], *, shared: bool
) -> torch.Tensor:
    """Map ``nbytes`` at ``offset`` of ``fd`` as a tensor of ``shape`` and ``dtype``.

    Args:
        shared: writes reach the file (an output place); otherwise they go to private pages.
    """
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    access = mmap.ACCESS_WRITE if shared else mmap.ACCESS_COPY
    mapped = mmap.mmap(fd, offset + nbytes - start, offset=start, access=access)
    flat = torch.frombuffer(mapped, dtype=torch.uint8, count=nbytes, offset=offset - start)
    return flat.view(dtype).view(shape)
