"""The small files around the weights: tokenizer, configs, and the merged model's card."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from graftkit.io.tensor_info import dtype_name

MAX_SIDE_FILE_BYTES = 50 * 1024 * 1024
# Weights (in any framework), shard indexes, and files that describe the parent rather than the merge.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")
_NOT_COPIED = ("README.md",)


def copy_side_files(src_dir: str | os.PathLike[str], dst_dir: str | os.PathLike[str]) -> list[Path]:
    """Copy a model folder's small non-weight files (config, tokenizer, chat template, license...).

    Skipped: weight files (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.gguf``, ``*.ckpt``,
    ``*.h5``, ``*.msgpack``, ``*.onnx``), ``*.index.json``, files over 50 MB, hidden files,
    subfolders, and ``README.md`` (the parent's card; see :func:`write_model_card`). Symlinks (as
    in the Hugging Face cache) are copied as the files they point to.

    Returns:
        The destination paths written, sorted.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src.iterdir()):
        if (
            not f.is_file()
            or f.name.startswith(".")
            or f.name.endswith(WEIGHT_SUFFIXES)
            or f.name.endswith(".index.json")
            or f.name in _NOT_COPIED
            or f.stat().st_size > MAX_SIDE_FILE_BYTES
        ):
            continue
        copied.append(Path(shutil.copyfile(f, dst / f.name)))
    return copied


def write_config(dst_dir: str | os.PathLike[str], config: dict[str, Any], dtype: torch.dtype) -> Path:
    """Write ``config.json`` with ``torch_dtype`` and ``dtype`` both set to ``dtype``'s name.

    Transformers 4.x reads ``torch_dtype``, 5.x reads ``dtype``; both are written so either loads
    the model in the dtype it was saved in.
    """
    path = Path(dst_dir) / "config.json"
    out = {**config, "torch_dtype": dtype_name(dtype), "dtype": dtype_name(dtype)}
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return path


def write_model_card(dst_dir: str | os.PathLike[str], method: str, parents: Sequence[str], recipe_yaml: str) -> Path:
    """Write ``README.md``: Hugging Face front matter (tags, ``base_model``) and the recipe.

    Args:
        dst_dir: the output model folder.
        method: the merge method's registry name, e.g. ``"ties"``.
        parents: the models merged (hub ids or paths), base first if there is one.
        recipe_yaml: the resolved recipe, reproduced verbatim in a code block.
    """
    front = yaml.safe_dump(
        {"base_model": list(parents), "library_name": "transformers", "tags": ["merge", "graftkit"]},
        sort_keys=False,
    )
    fence = "```"
    while fence in recipe_yaml:  # a fence longer than any run of backticks in the recipe
        fence += "`"
    parent_lines = "\n".join(f"- `{p}`" for p in parents)
    card = (
        f"---\n{front}---\n\n# Merged model\n\n"
        f"This model was made with graftkit by merging the models below with the `{method}` method.\n\n"
        f"## Parents\n\n{parent_lines}\n\n"
        f"## Recipe\n\n{fence}yaml\n{recipe_yaml.rstrip()}\n{fence}\n"
    )
    path = Path(dst_dir) / "README.md"
    path.write_text(card)
    return path
