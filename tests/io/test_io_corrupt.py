"""Every malformed checkpoint fails at open with a CheckpointError that names the file."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from graftkit.errors import CheckpointError
from graftkit.io import Checkpoint

F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def _open_fails(path: Path, named: Path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as err:
        Checkpoint.open(path)
    assert str(named) in str(err.value)


def test_lfs_pointer(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1234\n")
    _open_fails(tmp_path, f, "git-LFS pointer")


def test_tiny_file(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\x01\x02")
    _open_fails(tmp_path, f, "truncated")


def test_absurd_header_length(tmp_path: Path, raw_safetensors: Callable[..., Path]) -> None:
    f = raw_safetensors(tmp_path / "model.safetensors", {"w": F32_2}, bytes(8), header_len=10**12)
    _open_fails(tmp_path, f, "declares 1000000000000 header bytes")


def test_bad_json(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 8) + b"{not jso" + bytes(8))
    _open_fails(tmp_path, f, "not JSON")


def test_offsets_beyond_file(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.ones(100)}, f)
    f.write_bytes(f.read_bytes()[:-10])  # an interrupted download
    _open_fails(tmp_path, f, "truncated: tensor 'b'")


def test_overlapping_offsets(tmp_path: Path, raw_safetensors: Callable[..., Path]) -> None:
    header = {"a": F32_2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    f = raw_safetensors(tmp_path / "model.safetensors", header, bytes(16))
    _open_fails(tmp_path, f, "overlap")


def test_offsets_disagree_with_shape(tmp_path: Path, raw_safetensors: Callable[..., Path]) -> None:
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    f = raw_safetensors(tmp_path / "model.safetensors", header, bytes(8))
    _open_fails(tmp_path, f, "span 8 bytes but shape")


def test_reversed_offsets(tmp_path: Path, raw_safetensors: Callable[..., Path]) -> None:
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}
    f = raw_safetensors(tmp_path / "model.safetensors", header, bytes(8))
    _open_fails(tmp_path, f, "tensor 'a'")


def test_unknown_dtype(tmp_path: Path, raw_safetensors: Callable[..., Path]) -> None:
    header = {"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}
    f = raw_safetensors(tmp_path / "model.safetensors", header, bytes(8))
    _open_fails(tmp_path, f, "dtype 'C64' is not supported")


def test_bin_renamed_safetensors(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, f)
    _open_fails(tmp_path, f, "pickle")


def test_index_names_missing_shard(tiny_llama: tuple[Path, dict], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_llama[0], folder)
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    _open_fails(folder, folder / "model.safetensors.index.json", f"names shard '{shard.name}'")


def test_index_disagrees_with_shard(tiny_llama: tuple[Path, dict], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_llama[0], folder)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    index["weight_map"]["lm_head.weight"] = next(s for s in shards if s != index["weight_map"]["lm_head.weight"])
    index_path.write_text(json.dumps(index))
    _open_fails(folder, folder, "lm_head.weight")


def test_competing_safetensors_sets(tiny_llama: tuple[Path, dict], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_llama[0], folder)
    save_file({"w": torch.zeros(2)}, folder / "model.safetensors")
    _open_fails(folder, folder, "two competing safetensors weight sets")


def test_bin_and_safetensors_prefers_safetensors(tmp_path: Path) -> None:
    save_file({"st": torch.zeros(2)}, tmp_path / "model.safetensors")
    torch.save({"bin": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.warns(UserWarning, match="reads the safetensors"):
        ck = Checkpoint.open(tmp_path)
    assert ck.format == "safetensors" and list(ck.tensors) == ["st"]


def test_no_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    _open_fails(tmp_path, tmp_path, "no model weights found")
    save_file({"w": torch.zeros(2)}, tmp_path / "consolidated.safetensors")
    _open_fails(tmp_path, tmp_path, "consolidated.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(Checkpoint.open(tmp_path / "consolidated.safetensors").tensors) == ["w"]


def test_missing_path(tmp_path: Path) -> None:
    _open_fails(tmp_path / "nope", tmp_path / "nope", "no such file")


def test_corrupt_config(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{oops")
    _open_fails(tmp_path, tmp_path / "config.json", "not valid JSON")
