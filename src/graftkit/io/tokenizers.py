"""Tokenizer files of a model folder: load one, build the union of several, replace them in an output."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graftkit.errors import CheckpointError

# Files a tokenizer may be made of (name prefixes), as save_pretrained and the Hub name them.
TOKENIZER_FILES = ("tokenizer", "special_tokens_map", "vocab", "merges", "added_tokens", "chat_template")
_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(folder: str | Path) -> bool:
    """Whether a model folder holds tokenizer files, or the path is a GGUF file (its metadata holds one)."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".gguf":
        return True
    return folder.is_dir() and any((folder / name).is_file() for name in _MARKERS)


def load_tokenizer(folder: str | Path) -> Any:
    """The tokenizer of a model folder or GGUF file (``AutoTokenizer``, local files only, no remote
    code), or None if it has none.

    Raises:
        CheckpointError: tokenizer files that transformers cannot load.
    """
    folder = Path(folder)
    if folder.suffix == ".gguf" and folder.is_file():
        from graftkit.io.gguf_tokenizer import save_gguf_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            return load_tokenizer(tmp) if save_gguf_tokenizer(folder, Path(tmp)) else None
    if not has_tokenizer(folder):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(
            f"{folder}: its tokenizer files cannot be loaded by transformers ({err}); repair or remove them."
        ) from None


def union_tokenizer(reference: Any, others: Sequence[Any]) -> tuple[Any, list[str]]:
    """A copy of ``reference`` with every token of ``others`` it lacks added at the end, in model order.

    Tokens keep their added-token settings (special or not) from the first model that has them;
    ordinary vocabulary entries of another model become added tokens (matched as literal text).

    Returns:
        The new tokenizer and the tokens added, in id order.
    """
    with tempfile.TemporaryDirectory() as tmp:  # a fresh copy: the reference stays untouched
        reference.save_pretrained(tmp)
        out = type(reference).from_pretrained(tmp)
    known = set(out.get_vocab())
    added: list[str] = []
    for tokenizer in others:
        settings = {info.content: info for info in tokenizer.added_tokens_decoder.values()}
        for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
            if token in known:
                continue
            info = settings.get(token)
            special = bool(info is not None and info.special)
            out.add_tokens([info if info is not None else token], special_tokens=special)
            known.add(token)
            added.append(token)
    return out, added


def replace_tokenizer(folder: Path, tokenizer: Any = None, source: Path | None = None) -> None:
    """Remove ``folder``'s tokenizer files, then save ``tokenizer`` there or copy ``source``'s
    (a GGUF file's tokenizer is saved from its metadata)."""
    for path in _tokenizer_files(folder):
        path.unlink()
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    elif source is not None and source.suffix == ".gguf":
        from graftkit.io.gguf_tokenizer import save_gguf_tokenizer

        save_gguf_tokenizer(source, folder)
    elif source is not None:
        for path in _tokenizer_files(source):
            shutil.copy2(path, folder / path.name)


def _tokenizer_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and (p.name.startswith(TOKENIZER_FILES) or p.suffix == ".model")]
