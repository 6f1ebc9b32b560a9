"""atomic_output, side files, config, model card, and disk-space helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from graftkit.errors import OutputExistsError
from graftkit.io import (
    atomic_output,
    copy_side_files,
    estimate_output_bytes,
    free_disk_bytes,
    write_config,
    write_model_card,
)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".graft-" in p.name)


def test_atomic_output_publishes_on_success(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    with atomic_output(out, overwrite=False) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".merged.graft-tmp-") and tmp.is_dir()
        assert not out.exists()
        (tmp / "model.safetensors").write_text("new")
    assert (out / "model.safetensors").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_atomic_output_refuses_existing(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(OutputExistsError, match=r"merged.*--overwrite"), atomic_output(out, overwrite=False):
        pytest.fail("must not enter")
    assert (out / "keep").read_text() == "old"


def test_atomic_output_cleans_up_on_exception(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(out, overwrite=True) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == ["keep"]


def test_atomic_output_overwrite_replaces(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale").write_text("old")
    with atomic_output(out, overwrite=True) as tmp:
        (tmp / "fresh").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["fresh"]
    assert _leftovers(tmp_path) == []


def test_atomic_output_refuses_output_that_appeared_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    with pytest.raises(OutputExistsError), atomic_output(out) as tmp:
        (tmp / "x").write_text("new")
        out.mkdir()
    assert list(out.iterdir()) == [] and _leftovers(tmp_path) == []


def test_copy_side_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    keep = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "chat_template.jinja",
        "LICENSE",
    ]
    drop = [
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "training_args.bin",
        "optimizer.pt",
        "x.pth",
        "m.gguf",
        "README.md",
        ".gitattributes",
    ]
    for name in keep + drop:
        (src / name).write_text(name)
    (src / "big.txt").touch()
    with open(src / "big.txt", "r+b") as f:
        f.truncate(50 * 1024 * 1024 + 1)  # sparse, so the test stays cheap
    (src / "sub").mkdir()
    (src / "sub" / "tokenizer.json").write_text("nested")
    (src / "link.json").symlink_to(src / "vocab.json")
    copied = copy_side_files(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == sorted([*keep, "link.json"])
    assert sorted(copied) == sorted(dst / n for n in [*keep, "link.json"])
    assert (dst / "tokenizer.json").read_text() == "tokenizer.json"
    assert not (dst / "link.json").is_symlink() and (dst / "link.json").read_text() == "vocab.json"


def test_write_config_sets_both_dtype_keys(tmp_path: Path) -> None:
    write_config(tmp_path, {"model_type": "llama", "torch_dtype": "float32"}, torch.bfloat16)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg == {"model_type": "llama", "torch_dtype": "bfloat16", "dtype": "bfloat16"}


def test_write_model_card(tmp_path: Path) -> None:
    recipe = "method: ties\nmodels:\n  - a: 1\n```\n"
    parents = ["meta-llama/Llama-3.1-8B", "org/model:with-colon"]
    card = write_model_card(tmp_path, "ties", parents, recipe).read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == parents
    assert {"merge", "graftkit"} <= set(meta["tags"])
    assert "`ties`" in body and all(p in body for p in parents)
    assert "````yaml\n" + recipe.rstrip() + "\n````\n" in body  # fence longer than the recipe's own


def test_disk_helpers(tmp_path: Path) -> None:
    entries = [("a", (1000,), torch.float32), ("b", (10, 10), torch.bfloat16)]
    est = estimate_output_bytes(entries)
    assert 4200 <= est < 4200 + 8192
    assert free_disk_bytes(tmp_path / "not" / "yet" / "made") == pytest.approx(free_disk_bytes(tmp_path), rel=0.01)
    assert free_disk_bytes(tmp_path) > 0
