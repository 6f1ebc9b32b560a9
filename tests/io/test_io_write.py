"""plan_shards and ShardedWriter: files that safetensors and from_pretrained load, written in place."""

from __future__ import annotations

import gc
import json
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graftkit.errors import CheckpointError
from graftkit.io import (
    JOURNAL_FILE,
    Checkpoint,
    ShardedWriter,
    copy_side_files,
    plan_shards,
    read_journal,
    shard_file_names,
)


def _entries(sd: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in sd.items()]


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _write_all(out: Path, sd: dict[str, torch.Tensor], max_shard: int, order: list[str] | None = None) -> None:
    with ShardedWriter(out, _entries(sd), max_shard) as w:
        for name in order or list(sd):
            w.write(name, sd[name])


def test_plan_shards_greedy_in_order() -> None:
    f32 = torch.float32
    entries = [("a", (4,), f32), ("b", (4,), f32), ("big", (100,), f32), ("c", (2,), f32), ("d", (3,), f32)]
    plan = plan_shards(entries, max_shard_size=32)
    assert [[e[0] for e in s] for s in plan] == [["a", "b"], ["big"], ["c", "d"]]
    assert plan_shards(entries, 10**9) == [entries]
    assert plan_shards([], 10) == [[]]
    with pytest.raises(ValueError, match="twice"):
        plan_shards([("a", (1,), f32), ("a", (1,), f32)], 10)


def test_shard_file_names() -> None:
    assert shard_file_names(1) == ["model.safetensors"]
    assert shard_file_names(3) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


def test_single_shard_roundtrip_mixed_dtypes(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    sd = {
        "h": torch.randn(3, generator=g).half(),  # odd-sized 2-byte tensor before 4- and 8-byte ones
        "w": torch.randn(5, 3, generator=g),
        "b": torch.randn(7, generator=g).bfloat16(),
        "d": torch.randn(2, generator=g).double(),
        "i": torch.arange(5),
        "m": torch.tensor([True, False]),
        "s": torch.tensor(1.5),
    }
    _write_all(tmp_path / "out", sd, 10**6, order=list(reversed(sd)))
    assert sorted(os.listdir(tmp_path / "out")) == ["model.safetensors"]
    loaded = load_file(tmp_path / "out" / "model.safetensors")
    assert loaded.keys() == sd.keys()
    for k, v in sd.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
    # Every tensor is aligned to its itemsize in the file.
    for info in Checkpoint.open(tmp_path / "out").tensors.values():
        assert info.offset % info.dtype.itemsize == 0, info.name


def test_many_shards_and_oversized_tensor(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    sd = {f"t{i}": torch.randn(i + 1, 8, generator=g).bfloat16() for i in range(12)}
    sd["huge"] = torch.randn(64, 64, generator=g)  # 16 KB, far over the shard size
    _write_all(tmp_path / "out", sd, max_shard=400)
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("*.safetensors"))
    assert [p.name for p in shards] == shard_file_names(len(plan_shards(_entries(sd), 400))) and len(shards) >= 4
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in sd.values())
    assert set(index["weight_map"]) == set(sd)
    assert [k for k, f in index["weight_map"].items() if f == index["weight_map"]["huge"]] == ["huge"]
    for shard in shards:
        assert all(index["weight_map"][k] == shard.name for k in load_file(shard))
    loaded = _load_folder(out)
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def test_concurrent_writes(tmp_path: Path) -> None:
    sd = {f"t{i}": torch.full((50,), float(i)) for i in range(40)}
    with ShardedWriter(tmp_path / "out", _entries(sd), 1000) as w, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: w.write(k, sd[k]), sd))
    loaded = _load_folder(tmp_path / "out")
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def test_non_contiguous_input_is_written_logically(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"t": base.t()}  # (4, 3), non-contiguous
    _write_all(tmp_path / "out", sd, 10**6)
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["t"], base.t())


def test_from_pretrained_roundtrip(tiny_llama: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    src, state = tiny_llama
    out = tmp_path / "out"
    with (
        Checkpoint.open(src) as ck,
        ShardedWriter(out, [(n, i.shape, i.dtype) for n, i in ck.tensors.items()], 16_000) as w,
    ):
        for name in reversed(list(ck.tensors)):
            w.write(name, ck.read(name))
    copy_side_files(src, out)
    assert len(list(out.glob("model-*.safetensors"))) > 1
    model = LlamaForCausalLM.from_pretrained(out)
    reloaded = model.state_dict()
    assert set(reloaded) == set(state)
    for k, v in state.items():
        assert torch.equal(reloaded[k], v), k


def test_wrong_shape_dtype_unknown_and_twice(tmp_path: Path) -> None:
    sd = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    w = ShardedWriter(tmp_path / "out", _entries(sd), 10**6)
    with pytest.raises(CheckpointError, match=r"'a' was planned as torch.float32 \[2, 3\].*\[3, 2\]"):
        w.write("a", torch.zeros(3, 2))
    with pytest.raises(CheckpointError, match="torch.bfloat16"):
        w.write("a", torch.zeros(2, 3, dtype=torch.bfloat16))
    with pytest.raises(CheckpointError, match="'zzz' is not in the output plan"):
        w.write("zzz", torch.zeros(1))
    w.write("a", sd["a"])
    with pytest.raises(CheckpointError, match="written twice"):
        w.write("a", sd["a"])
    assert w.written == {"a"}
    with pytest.raises(CheckpointError, match=r"1 planned tensors were never written: 'b'"):
        w.finish()
    w.write("b", sd["b"])
    w.finish()
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["b"], sd["b"])


def test_context_manager_reports_missing(tmp_path: Path) -> None:
    with (
        pytest.raises(CheckpointError, match="never written"),
        ShardedWriter(tmp_path, [("x", (1,), torch.float32)], 8),
    ):
        pass


def test_write_neither_reads_back_nor_keeps_the_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("the writer read from a file")

    sd = {"a": torch.randn(64), "b": torch.randn(8, 8)}
    w = ShardedWriter(tmp_path / "out", _entries(sd), 10**6)
    for fn in ("read", "pread", "preadv", "readv"):
        monkeypatch.setattr(os, fn, no_reads, raising=False)
    t = sd["b"].clone()
    ref = weakref.ref(t)
    w.write("b", t)
    del t
    gc.collect()
    assert ref() is None  # the writer kept no reference: nothing is buffered until finish
    w.write("a", sd["a"])
    monkeypatch.undo()
    w.finish()
    loaded = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(loaded["b"], sd["b"]) and torch.equal(loaded["a"], sd["a"])


def test_journal_records_finished_tensors(tmp_path: Path) -> None:
    import zlib

    sd = {"a": torch.arange(4.0), "b": torch.ones(3).bfloat16()}
    w = ShardedWriter(tmp_path, _entries(sd), 10**6, journal=True)
    w.write("b", sd["b"])
    done = read_journal(tmp_path)
    assert done == {"b": f"{zlib.crc32(sd['b'].view(torch.uint8).numpy().tobytes()):08x}"}
    with open(tmp_path / JOURNAL_FILE, "a") as f:
        f.write('{"name": "a", "sha')  # a torn last line is ignored
    assert read_journal(tmp_path) == done
    w.write("a", sd["a"])
    w.finish()
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_tensors_computed_into_their_destination_equal_written_ones(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    sd = {f"t{i}": torch.randn(5 + i, 7, generator=gen) for i in range(6)} | {"empty": torch.zeros(0)}
    with ShardedWriter(tmp_path / "written", _entries(sd), 400, journal=True) as w:
        for name, tensor in sd.items():
            w.write(name, tensor)
        journal_written = read_journal(tmp_path / "written")
    with ShardedWriter(tmp_path / "mapped", _entries(sd), 400, journal=True) as w:
        for name, tensor in sd.items():
            place = w.destination(name)
            assert place.shape == tensor.shape and place.dtype == tensor.dtype
            torch.mul(tensor, 1.0, out=place)
            w.commit(name, place)
            with pytest.raises(CheckpointError, match="written twice"):
                w.destination(name)
        assert read_journal(tmp_path / "mapped") == journal_written
    written = {p.name: p.read_bytes() for p in (tmp_path / "written").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "mapped").iterdir()} == written
