"""Tokenizers between Hugging Face folders and GGUF metadata (``tokenizer.ggml.*``).

Into GGUF: a byte-level BPE ``tokenizer.json`` becomes llama.cpp's ``gpt2`` tokenizer model
(tokens by id, token types, merges, special token ids, chat template); the tokenizer of a GGUF
input is copied key by key. Out of GGUF: transformers builds the tokenizer from the metadata
(``AutoTokenizer.from_pretrained(folder, gguf_file=...)``) and saves it beside the weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("graftkit")

MetaValue = tuple[str, Any, Any, Any]
"""``(key, value, gguf.GGUFValueType, element type for arrays or None)``: one metadata entry."""

# token types (gguf.TokenType): NORMAL 1, CONTROL 3, USER_DEFINED 4, UNUSED 5
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5
_SPECIALS = (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding"))


def tokenizer_from_folder(folder: Path, vocab_size: int) -> list[MetaValue]:
    """GGUF tokenizer metadata for the byte-level BPE tokenizer of an HF folder.

    Reads ``tokenizer.json``, and ``tokenizer_config.json`` / ``chat_template.jinja`` when present.
    Token ids the tokenizer does not use, up to the model's vocabulary size, are written as
    ``[PAD<id>]`` of type UNUSED (as llama.cpp's converter does).

    Returns:
        The entries, or ``[]`` (with a logged warning) when the folder has no tokenizer GGUF can
        describe: none at all, not BPE, not byte-level, or more tokens than the model has rows.
    """
    import gguf

    path = folder / "tokenizer.json"
    if not path.is_file():
        log.warning("%s has no tokenizer.json; the GGUF file is written without a tokenizer", folder)
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _byte_level(data):
        log.warning(
            "the tokenizer in %s is not a byte-level BPE (it is %s); GGUF output writes only those (llama.cpp's "
            "gpt2 model), so the file is written without a tokenizer",
            folder,
            model.get("type"),
        )
        return []
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = data.get("added_tokens") or []
    vocab.update({tok["content"]: int(tok["id"]) for tok in added})
    n = max(vocab.values(), default=-1) + 1
    if n > vocab_size:
        log.warning(
            "the tokenizer in %s has %d tokens but the model only %d embedding rows; the GGUF file is written "
            "without a tokenizer",
            folder,
            n,
            vocab_size,
        )
        return []
    tokens, types = [f"[PAD{i}]" for i in range(vocab_size)], [_UNUSED] * vocab_size
    for token, i in vocab.items():
        tokens[i], types[i] = token, _NORMAL
    for tok in added:
        types[int(tok["id"])] = _CONTROL if tok.get("special") else _USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    config = _json(folder / "tokenizer_config.json")
    t = gguf.GGUFValueType
    out: list[MetaValue] = [
        ("tokenizer.ggml.model", "gpt2", t.STRING, None),
        ("tokenizer.ggml.pre", _pre_name(data), t.STRING, None),
        ("tokenizer.ggml.tokens", tokens, t.ARRAY, t.STRING),
        ("tokenizer.ggml.token_type", types, t.ARRAY, t.INT32),
    ]
    if merges:
        out.append(("tokenizer.ggml.merges", merges, t.ARRAY, t.STRING))
    for field, key in _SPECIALS:
        token = config.get(field)
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and token in vocab:
            out.append((f"tokenizer.ggml.{key}_token_id", vocab[token], t.UINT32, None))
    for field in ("add_bos_token", "add_eos_token"):
        if isinstance(config.get(field), bool):
            out.append((f"tokenizer.ggml.{field}", config[field], t.BOOL, None))
    template = config.get("chat_template")
    if not isinstance(template, str) and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, str) and template:
        out.append(("tokenizer.chat_template", template, t.STRING, None))
    return out


def tokenizer_from_gguf(path: Path) -> list[MetaValue]:
    """The ``tokenizer.*`` metadata of a GGUF file, to copy into another one."""
    import gguf

    reader = gguf.GGUFReader(path)
    out: list[MetaValue] = []
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.") and field.types:
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            out.append((key, field.contents(), field.types[0], sub))
    return out


def save_gguf_tokenizer(path: Path, folder: Path) -> bool:
    """Save the tokenizer a GGUF file describes into ``folder`` (``tokenizer.json`` and config).

    Built by transformers from the metadata (``AutoTokenizer.from_pretrained(dir, gguf_file=name)``).

    Returns:
        False when the file holds no tokenizer (no ``tokenizer.ggml.model``); nothing is written.
    """
    import gguf
    from transformers import AutoTokenizer

    if gguf.GGUFReader(path).fields.get("tokenizer.ggml.model") is None:
        return False
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(folder)
    return True


def _byte_level(data: dict[str, Any]) -> bool:
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(step.get("type") == "ByteLevel" for step in steps)


def _pre_name(data: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer (how text is split before BPE), where graftkit knows it."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    log.warning("unrecognised pre-tokenizer %s; writing tokenizer.ggml.pre 'default'", kinds)
    return "default"


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
