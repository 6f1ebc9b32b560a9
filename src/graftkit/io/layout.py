"""Find which weight files make up a Hugging Face model folder.

Recognised layouts, by the names ``save_pretrained`` writes:

* ``model.safetensors`` (one file)
* ``model.safetensors.index.json`` naming shards (``model-00001-of-00003.safetensors``, ...)
* ``pytorch_model.bin`` or ``pytorch_model.bin.index.json`` naming ``.bin`` shards
* a single llama.cpp ``.gguf`` file, passed by its path (read by :mod:`graftkit.io.gguf_reader`)

Other weight files in the folder (``consolidated.safetensors``, adapters, optimizer states) are
ignored, as ``from_pretrained`` ignores them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from graftkit.errors import CheckpointError

Format = Literal["safetensors", "sharded-safetensors", "bin", "gguf"]

ST_SINGLE, ST_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN_SINGLE, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class Layout:
    """The weight files of one checkpoint.

    Attributes:
        format: ``"safetensors"``, ``"sharded-safetensors"``, ``"bin"`` or ``"gguf"``.
        files: weight files in a stable order (index shards sorted by name).
        weight_map: tensor name → file for indexed checkpoints, None otherwise.
    """

    format: Format
    files: tuple[Path, ...]
    weight_map: dict[str, Path] | None = None


def find_layout(path: Path) -> Layout:
    """Decide which files hold the weights of ``path`` (a model folder or a single weight file).

    A folder with both safetensors and ``.bin`` weights uses the safetensors ones and warns (the
    same choice ``from_pretrained`` makes). A folder with both ``model.safetensors`` and
    ``model.safetensors.index.json`` is ambiguous and is an error, as are ``pytorch_model.bin`` next
    to ``pytorch_model.bin.index.json``.

    Raises:
        CheckpointError: the path is missing, ambiguous, names missing shards, or holds no weights.
    """
    try:
        exists = path.exists()
    except (OSError, ValueError) as e:  # a name too long, a NUL byte …: not a path that can exist
        raise CheckpointError(f"{str(path)!r}: not a usable path ({e}). Check the checkpoint path.") from None
    if not exists:
        raise CheckpointError(f"{path}: no such file or folder. Check the checkpoint path.")
    if path.is_file():
        if path.suffix == ".safetensors":
            return Layout("safetensors", (path,))
        if path.suffix in (".bin", ".pt", ".pth"):
            return Layout("bin", (path,))
        if path.suffix == ".gguf":
            return Layout("gguf", (path,))
        if path.name.endswith(".index.json"):
            return find_layout(path.parent)
        raise CheckpointError(
            f"{path}: not a weight file graftkit reads. Pass a model folder, a .safetensors file, a "
            "pytorch_model.bin file or a .gguf file."
        )
    st = _pick(path, ST_SINGLE, ST_INDEX, "safetensors")
    bn = _pick(path, BIN_SINGLE, BIN_INDEX, ".bin")
    if st is not None and bn is not None:
        warnings.warn(
            f"{path} holds both safetensors and pytorch_model.bin weights; graftkit reads the safetensors "
            "ones (as from_pretrained does). Delete the other set if they differ.",
            stacklevel=3,
        )
    chosen = st or bn
    if chosen is None:
        strays = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
        hint = (
            f" It has {', '.join(strays)}; if one of them is the model, pass its path directly."
            if strays
            else " Is it a model folder? Its files may not be downloaded yet."
        )
        raise CheckpointError(
            f"{path}: no model weights found (looked for {ST_SINGLE}, {ST_INDEX}, {BIN_SINGLE} and {BIN_INDEX}).{hint}"
        )
    return chosen


def _pick(folder: Path, single: str, index: str, kind: str) -> Layout | None:
    has_single, has_index = (folder / single).is_file(), (folder / index).is_file()
    if has_single and has_index:
        raise CheckpointError(
            f"{folder}: holds two competing {kind} weight sets, {single} and {index} with its shards. "
            f"Delete the stale one (compare dates) so only one set remains."
        )
    fmt: Format = "bin" if kind == ".bin" else "safetensors"
    if has_single:
        return Layout(fmt, (folder / single,))
    if has_index:
        weight_map = read_index(folder / index)
        files = tuple(sorted(set(weight_map.values())))
        return Layout("bin" if fmt == "bin" else "sharded-safetensors", files, weight_map)
    return None


def read_index(index: Path) -> dict[str, Path]:
    """Read an ``*.index.json`` file's ``weight_map`` as tensor name → shard path (checked to exist)."""
    try:
        data = json.loads(index.read_text())
        raw_map = data["weight_map"]
        if not isinstance(raw_map, dict) or not all(isinstance(v, str) for v in raw_map.values()):
            raise TypeError("weight_map must map tensor names to file names")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{index}: is not a valid shard index ({type(e).__name__}: {e}). It must be JSON with a "
            '"weight_map" object mapping tensor names to shard files; download it again.'
        ) from e
    folder = index.parent
    for shard in sorted(set(raw_map.values())):
        if Path(shard).name != shard or shard in (".", ".."):
            raise CheckpointError(
                f"{index}: names shard {shard!r}, which is not a plain file name in {folder}. Shards must "
                "sit beside their index; fix or re-download the index."
            )
        if not (folder / shard).is_file():
            n = sum(v == shard for v in raw_map.values())
            raise CheckpointError(
                f"{index}: names shard {shard!r} ({n} tensors), which is missing from {folder}. Download "
                "the missing shard (an interrupted download often leaves a folder like this)."
            )
    return {name: folder / shard for name, shard in raw_map.items()}
