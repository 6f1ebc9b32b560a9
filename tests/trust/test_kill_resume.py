"""A merge killed at random points (SIGKILL) leaves nothing at the output path, and --resume
finishes it byte-identical to an uninterrupted run."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

N_TENSORS, SIZE = 48, 1 << 18  # 48 tensors of 1 MiB float32 per model


def make_models(root: Path) -> list[Path]:
    folders = []
    for m in range(3):
        gen = torch.Generator().manual_seed(m)
        state = {f"model.layers.{i}.w": torch.randn(SIZE, generator=gen) for i in range(N_TENSORS)}
        folder = root / f"m{m}"
        folder.mkdir()
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        folders.append(folder)
    return folders


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def graft(*args, **kwargs) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "graftkit", *map(str, args), "--no-progress", "--threads", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def resumed(stderr: str) -> list[int]:
    """How many verified tensors each resumed run reported reusing."""
    return [int(line.split("resuming: ")[1].split()[0]) for line in stderr.splitlines() if "resuming: " in line]


def test_kill_and_resume_gives_identical_bytes(tmp_path):
    base, *experts = make_models(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "dare_ties",
                "base_model": str(base),
                "seed": 5,
                "parameters": {"density": 0.3},
                "models": [{"model": str(e)} for e in experts],
            }
        )
    )
    reference = tmp_path / "reference"
    proc = graft("merge", recipe, "-o", reference, "--max-shard-size", "10MB")
    assert proc.wait(timeout=120) == 0, proc.stderr.read()

    out = tmp_path / "out"
    journal = tmp_path / ".out.graft-partial" / ".graft-progress.jsonl"
    rng = random.Random(0)
    resumed_counts = []
    for attempt in range(4):
        # Kill at a random point of the streaming: once `target` more tensors are journaled.
        already = len(journal.read_text().splitlines()) if journal.exists() else 0
        target = already + rng.randint(1, 8)
        proc = graft("merge", recipe, "-o", out, "--max-shard-size", "10MB", "--resume")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and len(journal.read_text().splitlines()) >= target:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
        resumed_counts += resumed(proc.stderr.read())
        if proc.returncode == 0:  # it finished before the kill: nothing to resume any more
            break
        assert proc.returncode == -signal.SIGKILL, f"attempt {attempt} failed on its own"
        assert not out.exists(), f"attempt {attempt}: a killed merge left a folder at the output path"
    if not out.exists():
        proc = graft("merge", recipe, "-o", out, "--max-shard-size", "10MB", "--resume")
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        resumed_counts += resumed(proc.stderr.read())
    assert any(count > 0 for count in resumed_counts), "no run ever resumed from verified tensors"
    assert digest(out) == digest(reference)
    assert not list(tmp_path.glob(".out.graft-*"))  # the partial folder is gone once complete


def test_resume_verifies_journaled_tensors_by_checksum(tmp_path):
    """A journaled tensor whose bytes changed since is not trusted: it must be written again."""
    from graftkit.io import ShardedWriter

    entries = [(f"t{i}", (4, 4), torch.float32) for i in range(3)]
    tensors = {name: torch.full(shape, float(i)) for i, (name, shape, _) in enumerate(entries)}
    writer = ShardedWriter(tmp_path, entries, 1 << 20, journal=True)
    writer.write("t0", tensors["t0"])
    writer.write("t1", tensors["t1"])
    writer.abort()  # the process died here
    shard = tmp_path / "model.safetensors"
    from graftkit.io import Checkpoint

    with Checkpoint.open(shard) as checkpoint:
        offset = checkpoint.tensors["t1"].offset
    raw = bytearray(shard.read_bytes())
    raw[offset] ^= 0xFF  # corrupt the first byte of t1
    shard.write_bytes(bytes(raw))
    resumed = ShardedWriter(tmp_path, entries, 1 << 20, journal=True, resume=True)
    assert resumed.written == frozenset({"t0"})  # t1's checksum fails; t2 was never written
    for name in sorted(set(tensors) - resumed.written):
        resumed.write(name, tensors[name])
    resumed.finish()
    from safetensors.torch import load_file

    loaded = load_file(shard)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)


def test_resume_without_matching_partial_starts_over(tmp_path):
    from graftkit.io import ShardedWriter

    entries = [("a", (2,), torch.float32)]
    writer = ShardedWriter(tmp_path, entries, 1 << 20, journal=True)
    writer.write("a", torch.ones(2))
    writer.abort()
    other = [("a", (3,), torch.float32)]  # another plan: the header differs
    resumed = ShardedWriter(tmp_path, other, 1 << 20, journal=True, resume=True)
    assert resumed.written == frozenset()
