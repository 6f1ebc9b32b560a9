"""``graft convert FILE.gguf -o DIR``: a GGUF file as a float32 safetensors Hugging Face folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from graftkit.errors import CheckpointError, GraftError
from graftkit.io.output import atomic_output
from graftkit.io.side_files import write_config
from graftkit.io.writer import ShardedWriter

DEFAULT_SHARD_BYTES = 5 * 10**9


def convert_gguf(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_shard_size: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Dequantize a Llama GGUF file into an HF folder: ``config.json``, tokenizer, safetensors shards.

    Streams tensor by tensor (one dequantized tensor in memory at a time) into a temporary folder
    beside ``out`` that is renamed into place when complete. Tensors keep their HF names as
    :class:`graftkit.io.gguf_reader.GGUFCheckpoint` gives them (a tied head stays tied: no
    ``lm_head.weight``); the tokenizer is built by transformers from the file's metadata.

    Args:
        src: the ``.gguf`` file.
        out: the folder to create.
        overwrite: replace ``out`` if it exists.
        max_shard_size: bytes per safetensors shard.

    Returns:
        ``out``.

    Raises:
        CheckpointError: ``src`` is not a readable Llama GGUF file.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from graftkit.io.gguf_reader import GGUFCheckpoint
    from graftkit.io.gguf_tokenizer import save_gguf_tokenizer

    src, out = Path(src), Path(out)
    if src.suffix != ".gguf" or not src.is_file():
        raise CheckpointError(f"{src}: not a .gguf file. graft convert reads one GGUF file; pass its path.")
    target = out.expanduser().resolve()
    if target == src.resolve().parent or target in src.resolve().parents:
        raise GraftError(f"{out}: holds the input {src}; writing there would destroy it. Choose another folder.")
    with atomic_output(out, overwrite=overwrite) as tmp, GGUFCheckpoint.open(src) as checkpoint:
        entries = [(name, info.shape, torch.float32) for name, info in checkpoint.tensors.items()]
        with ShardedWriter(tmp, entries, max_shard_size) as writer:
            for name in checkpoint.tensors:
                writer.write(name, checkpoint.read(name))
        write_config(tmp, checkpoint.config, torch.float32)
        save_gguf_tokenizer(src, tmp)
    return out
