"""map_tensor: a tensor over a file's bytes, shared (writes reach the file) or private."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from graftkit.io.mapping import map_tensor


def test_shared_map_writes_reach_the_file_at_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(10_000))
    fd = os.open(path, os.O_RDWR)
    try:
        t = map_tensor(fd, 4_100, 24, torch.float32, (2, 3), shared=True)
        t.copy_(torch.arange(6, dtype=torch.float32).view(2, 3))
        del t
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[4_100:4_124] == torch.arange(6, dtype=torch.float32).numpy().tobytes()
    assert data[:4_100] == bytes(4_100) and data[4_124:] == bytes(10_000 - 4_124)


def test_private_map_reads_the_bytes_and_keeps_writes_private(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    values = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    path.write_bytes(b"x" * 70_001 + values.numpy().tobytes())
    fd = os.open(path, os.O_RDONLY)
    try:
        t = map_tensor(fd, 70_001, values.nbytes, torch.float32, (5, 7), shared=False)
        assert torch.equal(t, values)
        t.zero_()
    finally:
        os.close(fd)
    assert path.read_bytes()[70_001:] == values.numpy().tobytes()
