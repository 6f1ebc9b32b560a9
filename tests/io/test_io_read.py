"""Checkpoint.open / read: inventory from headers, byte-exact reads, sharded and .bin inputs."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from graftkit.errors import CheckpointError
from graftkit.io import Checkpoint, TensorInfo, detect_quantization

MIXED = {
    "f32": torch.randn(3, 5, generator=torch.Generator().manual_seed(0)),
    "f16": torch.randn(7, generator=torch.Generator().manual_seed(1)).half(),
    "bf16": torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(2)).bfloat16(),
    "f64": torch.randn(3).double(),
    "i64": torch.arange(-4, 5),
    "i32": torch.arange(9, dtype=torch.int32).reshape(3, 3),
    "i16": torch.tensor([-3, 7], dtype=torch.int16),
    "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
    "u8": torch.tensor([0, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "f8": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
    "scalar": torch.tensor(3.25),
    "empty": torch.zeros(0, 4),
}


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file(MIXED, path, metadata={"format": "pt", "note": "x"})
    return path


def test_inventory_matches_safetensors_view(mixed_file: Path) -> None:
    ck = Checkpoint.open(mixed_file.parent)
    assert ck.format == "safetensors"
    assert ck.metadata == {"format": "pt", "note": "x"}
    assert ck.config is None
    with safe_open(mixed_file, "pt") as f:
        names = list(f.keys())
        assert sorted(ck.tensors) == sorted(names)
        for name in names:
            info = ck.tensors[name]
            sl = f.get_slice(name)
            assert list(info.shape) == sl.get_shape()
            assert info.dtype == f.get_tensor(name).dtype
            assert info.file == mixed_file
            assert info.nbytes == MIXED[name].numel() * MIXED[name].element_size()


def test_offsets_address_the_tensor_bytes(mixed_file: Path) -> None:
    ck = Checkpoint.open(mixed_file)
    raw = mixed_file.read_bytes()
    for name, info in ck.tensors.items():
        expected = MIXED[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert raw[info.offset : info.offset + info.nbytes] == expected, name


def test_read_equals_load_file_for_every_dtype(mixed_file: Path) -> None:
    reference = load_file(mixed_file)
    with Checkpoint.open(mixed_file) as ck:
        for name, ref in reference.items():
            got = ck.read(name)
            assert got.dtype == ref.dtype and got.shape == ref.shape, name
            assert torch.equal(got.reshape(-1).view(torch.uint8), ref.reshape(-1).view(torch.uint8)), name


def test_read_returns_fresh_owned_tensors(mixed_file: Path) -> None:
    with Checkpoint.open(mixed_file) as ck:
        a = ck.read("f32")
        a.zero_()
        assert torch.equal(ck.read("f32"), MIXED["f32"])


def test_read_into_out(mixed_file: Path) -> None:
    with Checkpoint.open(mixed_file) as ck:
        out = torch.full((3, 5), float("nan"))
        assert ck.read("f32", out=out) is out and torch.equal(out, MIXED["f32"])
        bf = torch.empty(2, 3, 3, dtype=torch.bfloat16)
        assert torch.equal(ck.read("bf16", out=bf), MIXED["bf16"])
        with pytest.raises(ValueError, match="contiguous CPU torch.float32"):
            ck.read("f32", out=torch.empty(5, 3).t())
        with pytest.raises(ValueError, match="shape"):
            ck.read("f32", out=torch.empty(15))


def test_concurrent_reads_from_threads(tiny_llama: tuple[Path, dict[str, torch.Tensor]]) -> None:
    folder, state = tiny_llama
    with Checkpoint.open(folder) as ck, ThreadPoolExecutor(4) as pool:
        names = list(ck.tensors) * 4
        for name, t in zip(names, pool.map(ck.read, names), strict=True):
            assert torch.equal(t, state[name]), name


def test_sharded_hf_folder(tiny_llama: tuple[Path, dict[str, torch.Tensor]]) -> None:
    folder, state = tiny_llama
    assert (folder / "model.safetensors.index.json").is_file()
    with Checkpoint.open(folder) as ck:
        assert ck.format == "sharded-safetensors"
        assert len({i.file for i in ck.tensors.values()}) > 1
        assert ck.config is not None and ck.config["model_type"] == "llama"
        assert ck.metadata.get("format") == "pt"
        assert set(ck.tensors) == set(state)
        for name, ref in state.items():
            assert torch.equal(ck.read(name), ref), name


def test_read_after_close_and_unknown_name(mixed_file: Path) -> None:
    ck = Checkpoint.open(mixed_file)
    with pytest.raises(KeyError, match="nope"):
        ck.read("nope")
    ck.close()
    with pytest.raises(CheckpointError, match="closed"):
        ck.read("f32")


def test_bin_checkpoint_single_and_sharded(tmp_path: Path) -> None:
    sd = {"w": torch.randn(4, 4), "b": torch.randn(4).bfloat16()}
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with Checkpoint.open(tmp_path) as ck:
        assert ck.format == "bin" and ck.tensors["w"].offset == -1
        assert ck.tensors["b"] == TensorInfo("b", (4,), torch.bfloat16, tmp_path / "pytorch_model.bin", -1, 8)
        for k, v in sd.items():
            assert torch.equal(ck.read(k), v)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    torch.save({"w": sd["w"]}, sharded / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": sd["b"]}, sharded / "pytorch_model-00002-of-00002.bin")
    index = {"weight_map": {"w": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}
    (sharded / "pytorch_model.bin.index.json").write_text(__import__("json").dumps(index))
    with Checkpoint.open(sharded) as ck:
        assert ck.format == "bin"
        assert {i.file.name for i in ck.tensors.values()} == set(index["weight_map"].values())
        for k, v in sd.items():
            assert torch.equal(ck.read(k), v)


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (f"touch {self.sentinel}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "evil": _Payload(sentinel)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*refused"):
        Checkpoint.open(tmp_path)
    assert not sentinel.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(tmp_path / "pytorch_model.bin", weights_only=False)
    assert sentinel.exists()


def _infos(**named: torch.dtype) -> dict[str, TensorInfo]:
    return {n: TensorInfo(n, (2,), d, Path("f"), 0, 2 * d.itemsize) for n, d in named.items()}


@pytest.mark.parametrize(
    ("config", "tensors", "expected"),
    [
        (None, _infos(**{"model.w": torch.bfloat16}), None),
        ({"quantization_config": {"quant_method": "gptq"}}, {}, "GPTQ"),
        ({"quantization_config": {"quant_method": "awq"}}, {}, "AWQ"),
        ({"quantization_config": {"load_in_4bit": True}}, {}, "bitsandbytes"),
        ({"quantization_config": {"quant_method": "fp8"}}, {}, "FP8"),
        ({}, _infos(**{"l.qweight": torch.int32, "l.qzeros": torch.int32, "l.g_idx": torch.int32}), "GPTQ"),
        ({}, _infos(**{"l.qweight": torch.int32, "l.qzeros": torch.int32, "l.scales": torch.float16}), "AWQ"),
        ({}, _infos(**{"l.weight": torch.uint8, "l.weight.absmax": torch.float32}), "bitsandbytes"),
        ({}, _infos(**{"l.weight": torch.float8_e4m3fn}), "FP8"),
    ],
)
def test_detect_quantization(config: dict | None, tensors: dict, expected: str | None) -> None:
    assert detect_quantization(config, tensors) == expected


def test_read_mapped_equals_read_and_never_writes_the_file(mixed_file: Path) -> None:
    before = mixed_file.read_bytes()
    with Checkpoint.open(mixed_file.parent) as ck:
        for name, expected in MIXED.items():
            mapped = ck.read_mapped(name)
            assert mapped.dtype == expected.dtype and mapped.shape == expected.shape
            assert torch.equal(mapped.reshape(-1).view(torch.uint8), expected.reshape(-1).view(torch.uint8)), name
            if mapped.numel() and mapped.is_floating_point():
                mapped.fill_(7)  # copy-on-write: private pages only
    assert mixed_file.read_bytes() == before
