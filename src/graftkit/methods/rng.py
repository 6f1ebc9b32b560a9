"""Seeded randomness that does not depend on device, thread count or processing order.

Every random draw of a merge is keyed by (recipe seed, expert index, tensor name) through
:func:`expert_seed`, and by the name of the stage that draws (``"dare"``, ``"della"``) through
:func:`stream_seed`, so two stages of one merge never share a stream. Draws are made on the CPU
with a fresh ``torch.Generator`` and then moved to the target device: the same key gives the
same bytes on CPU and GPU, with 1 or 16 threads, and whichever tensor is merged first.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import torch

_MASK_63 = (1 << 63) - 1
BLOCK = 1 << 22  # entries per independently seeded block of draws


def _hash63(*parts: object) -> int:
    # The unit separator cannot appear in str(int); a tensor name is always the last part,
    # so the encoding is unambiguous.
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _MASK_63


def expert_seed(seed: int, expert_index: int, tensor_name: str) -> int:
    """Seed for one expert's draws on one tensor.

    Args:
        seed: the recipe's seed.
        expert_index: position of the expert in the recipe's model list (0-based).
        tensor_name: the checkpoint key, e.g. ``"model.layers.0.mlp.up_proj.weight"``.

    Returns:
        A non-negative 63-bit integer taken from SHA-256 of the three values.
    """
    return _hash63("expert", int(seed), int(expert_index), tensor_name)


def stream_seed(seed: int, stream: str) -> int:
    """Seed of the sub-stream ``stream`` (a stage name) derived from an expert seed."""
    return _hash63("stream", int(seed), stream)


def uniform(
    shape: torch.Size | tuple[int, ...],
    seed: int,
    *,
    stream: str,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform [0, 1) float32 draws, identical on every device.

    Args:
        shape: shape of the result.
        seed: an expert seed from :func:`expert_seed`.
        stream: the drawing stage's name; different streams give independent draws.
        device: where the result goes; the draw itself is always made on the CPU.

    Returns:
        float32 tensor of ``shape`` on ``device``.

    Large tensors are drawn in blocks of ``BLOCK`` entries, block ``j`` from its own generator
    seeded by (stream seed, j), filled in parallel: the bytes depend only on the seed and the
    shape, never on the thread count. Block 0 uses the stream seed itself, so a tensor of at
    most ``BLOCK`` entries is one plain ``torch.rand`` draw.
    """
    base_seed = stream_seed(seed, stream)
    flat = torch.empty(math.prod(shape), dtype=torch.float32)  # (n,)
    starts = range(0, flat.numel(), BLOCK)

    def fill(start: int) -> None:
        block = start // BLOCK
        gen = torch.Generator(device="cpu").manual_seed(base_seed if block == 0 else _hash63("block", base_seed, block))
        torch.rand(flat[start : start + BLOCK].shape, generator=gen, out=flat[start : start + BLOCK])

    if len(starts) <= 1 or torch.get_num_threads() == 1:
        for start in starts:
            fill(start)
    else:
        with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
            list(pool.map(fill, starts))
    draws = flat.view(tuple(shape))
    return draws if device is None else draws.to(device)
