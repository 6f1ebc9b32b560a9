"""Split an output state dict into safetensors shards, the way ``save_pretrained`` names them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from graftkit.io.tensor_info import Shape, TensorEntry, tensor_nbytes

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def normalize_entries(entries: Iterable[tuple[str, Sequence[int], torch.dtype]]) -> list[TensorEntry]:
    """Entries as ``(name, tuple_of_ints, dtype)``; duplicate names are a ``ValueError``."""
    out: list[TensorEntry] = []
    seen: set[str] = set()
    for name, shape, dtype in entries:
        if name in seen:
            raise ValueError(f"tensor {name!r} appears twice in the output plan")
        seen.add(name)
        out.append((name, tuple(int(d) for d in shape), dtype))
    return out


def plan_shards(
    entries: Iterable[tuple[str, Sequence[int], torch.dtype]], max_shard_size: int
) -> list[list[TensorEntry]]:
    """Group tensors into shards of at most ``max_shard_size`` bytes, keeping the given order.

    Greedy and deterministic: a shard is closed when the next tensor would overflow it. A tensor
    larger than ``max_shard_size`` gets a shard of its own. Sizes count tensor bytes only, as
    ``save_pretrained`` does.

    Args:
        entries: ``(name, shape, dtype)`` per tensor.
        max_shard_size: byte budget per shard, > 0.

    Returns:
        Shards, each a non-empty list of entries; ``[[]]`` for no entries.
    """
    if max_shard_size <= 0:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size}")
    shards: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in normalize_entries(entries):
        nbytes = tensor_nbytes(entry[1], entry[2])
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def shard_file_names(n_shards: int) -> list[str]:
    """``["model.safetensors"]`` for one shard, else ``model-00001-of-0000N.safetensors``, ..."""
    if n_shards == 1:
        return [SINGLE_FILE]
    return [f"model-{i:05d}-of-{n_shards:05d}.safetensors" for i in range(1, n_shards + 1)]


def shard_layout(shard: list[TensorEntry]) -> list[tuple[str, Shape, torch.dtype, int, int]]:
    """Byte ranges of one shard's tensors, relative to the start of its data section.

    Tensors are packed back to back (safetensors forbids gaps), widest itemsize first and otherwise
    in plan order, so every tensor starts at a multiple of its own itemsize.
    """
    layout, pos = [], 0
    for name, shape, dtype in sorted(shard, key=lambda e: -e[2].itemsize):  # stable sort
        end = pos + tensor_nbytes(shape, dtype)
        layout.append((name, shape, dtype, pos, end))
        pos = end
    return layout


def estimate_output_bytes(entries: Iterable[tuple[str, Sequence[int], torch.dtype]]) -> int:
    """Upper estimate of the disk space a checkpoint of ``entries`` takes, headers and index included."""
    total = 0
    for name, shape, dtype in normalize_entries(entries):
        # Data, plus the header entry and the index line (name twice, ~100 bytes of JSON around it).
        total += tensor_nbytes(shape, dtype) + 2 * len(name.encode()) + 128
    return total + 4096
