"""Tokenizer alignment (``tokenizer: {source: base | union | MODEL}``): plan the output vocabulary.

Embedding and head rows are matched by token string, not by id, so models whose tokenizers
differ (added tokens, another order) merge row by row. Planning reads tokenizers and tensor
headers only; :mod:`graftkit.merge.vocab_rows` remaps each vocabulary tensor as it is read.
Rows beyond a tokenizer's length (padding) are kept: the output has at least the reference's rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import CheckpointError, RecipeError
from graftkit.io.tokenizers import has_tokenizer, load_tokenizer, replace_tokenizer, union_tokenizer
from graftkit.merge.sources import TensorSource
from graftkit.merge.validate import ResolvedRecipe
from graftkit.merge.vocab_rows import RowMaps

log = logging.getLogger(__name__)

# Tensors whose rows are the vocabulary (name endings, 2-D).
VOCAB_TENSORS = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class VocabPlan:
    """The output vocabulary and how every input's rows map onto it.

    Attributes:
        names: the vocabulary tensors (remapped when ``maps`` is set).
        n_rows: the output's rows (tokens plus kept padding).
        maps: per input, its row for each output row; None when every input already matches.
        tokenizer: a union tokenizer to save, or None.
        copy_from: a folder whose tokenizer files the output takes (``source: MODEL``), or None.
        config_updates: config.json keys to change.
        summary, warnings: lines for ``graft validate`` and the merge log.
    """

    names: frozenset[str]
    n_rows: int
    maps: RowMaps | None
    tokenizer: Any = None
    copy_from: Path | None = None
    config_updates: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def rows_for(self, name: str) -> RowMaps | None:
        return self.maps if name in self.names else None

    def write_tokenizer(self, folder: Path) -> None:
        """Give the output folder its tokenizer (the reference's files are already there)."""
        if self.tokenizer is not None or self.copy_from is not None:
            replace_tokenizer(folder, self.tokenizer, self.copy_from)


def plan_vocab(
    resolved: ResolvedRecipe, base: TensorSource | None, experts: Sequence[TensorSource]
) -> VocabPlan | None:
    """Plan the alignment the recipe's ``tokenizer`` asks for (None when it asks for none).

    Raises:
        RecipeError: a reference without a tokenizer, or a ``source`` without one.
    """
    options = resolved.recipe.tokenizer_options
    if options is None:
        return None
    recipe = resolved.recipe
    paths = ([recipe.base_model] if base is not None else []) + resolved.expert_paths
    sources = ([base] if base is not None else []) + list(experts)
    reference = sources[0]
    names = frozenset(n for n, m in reference.tensors.items() if n.endswith(VOCAB_TENSORS) and len(m.shape) == 2)
    tokenizers = [_tokenizer(path, i == 0) for i, path in enumerate(paths)]
    plan = VocabPlan(names, 0, None)
    for path, tok in zip(paths[1:], tokenizers[1:], strict=True):
        if tok is None:
            plan.warnings.append(f"{path} has no tokenizer; its rows are taken to follow {paths[0]}'s vocabulary.")
    vocabs = [(tok or tokenizers[0]).get_vocab() for tok in tokenizers]
    rows = [_rows(src, names, path) for src, path in zip(sources, paths, strict=True)]
    out_vocab, plan.n_rows = _output_vocab(options, paths, tokenizers, vocabs, rows, plan)
    if options.pad_to_multiple_of:
        plan.n_rows = -(-plan.n_rows // options.pad_to_multiple_of) * options.pad_to_multiple_of
    maps = [_row_map(out_vocab, plan.n_rows, vocab, n) for vocab, n in zip(vocabs, rows, strict=True)]
    identity = torch.arange(plan.n_rows)
    if not all(m.numel() == n == plan.n_rows and torch.equal(m, identity) for m, n in zip(maps, rows, strict=True)):
        plan.maps = RowMaps(tuple(maps), 0 if base is not None else None)
    _note_orphans(out_vocab, maps, plan)
    plan.config_updates["vocab_size"] = plan.n_rows
    listed = ", ".join(sorted(names)) or "none found"
    plan.summary.insert(0, f"  vocabulary rows aligned by token in: {listed} ({plan.n_rows} rows)")
    return plan


def _tokenizer(path: str, required: bool) -> Any:
    tok = load_tokenizer(path)
    if tok is None and required:
        raise RecipeError(
            f"`tokenizer`: {path} has no tokenizer (tokenizer.json or tokenizer_config.json), so its "
            "rows cannot be matched by token; add its tokenizer to the folder or remove `tokenizer`."
        )
    return tok


def _rows(source: TensorSource, names: frozenset[str], label: str) -> int:
    """How many vocabulary rows a model's tensors have (0 when it has none of them)."""
    found = {n: int(source.tensors[n].shape[0]) for n in sorted(names) if n in source.tensors}
    if len(set(found.values())) > 1:
        raise CheckpointError(
            f"{label}: its vocabulary tensors have different row counts ({found}), so one token map cannot "
            "serve them all; resize them to one vocabulary first."
        )
    return next(iter(found.values()), 0)


def _output_vocab(options, paths, tokenizers, vocabs, rows, plan: VocabPlan) -> tuple[dict[str, int], int]:
    """The output's token → id map and its row count, per ``source``."""
    n_ref = _n_tokens(vocabs[0])
    if options.source == "base":
        plan.summary.append(f"  tokenizer: {paths[0]}'s ({n_ref} tokens)")
        return vocabs[0], max(rows[0], n_ref)
    if options.source == "union":
        others = [tok for tok in tokenizers[1:] if tok is not None]
        plan.tokenizer, added = union_tokenizer(tokenizers[0], others)
        vocab = plan.tokenizer.get_vocab()
        shown = ", ".join(repr(t) for t in added[:8]) + (" …" if len(added) > 8 else "")
        plan.summary.append(
            f"  tokenizer: union of {len(others) + 1} ({_n_tokens(vocab)} tokens; {len(added)} not in {paths[0]}"
            + (f": {shown})" if added else ")")
        )
        if not added:
            plan.tokenizer = None  # the reference's files already are the union
        return vocab, max(rows[0], _n_tokens(vocab))
    return _model_vocab(options.source, paths, vocabs, rows, plan)


def _model_vocab(source: str, paths, vocabs, rows, plan: VocabPlan) -> tuple[dict[str, int], int]:
    folder = Path(source)
    if not has_tokenizer(folder):
        raise RecipeError(
            f"`tokenizer.source` (or `tokenizer_source`): {source!r} is not base, union or a folder with tokenizer "
            "files; name one of those."
        )
    vocab = load_tokenizer(folder).get_vocab()
    plan.copy_from = folder
    own = [i for i, p in enumerate(paths) if Path(p).resolve() == folder.resolve()]
    n_rows = max(_n_tokens(vocab), rows[own[0]] if own else 0)
    config = folder / "config.json"
    if config.is_file():
        theirs = json.loads(config.read_text())
        plan.config_updates.update({k: theirs[k] for k in _ID_KEYS if k in theirs})
    plan.summary.append(f"  tokenizer: {source}'s ({_n_tokens(vocab)} tokens)")
    return vocab, n_rows


def _n_tokens(vocab: dict[str, int]) -> int:
    return max(vocab.values()) + 1 if vocab else 0


def _row_map(out_vocab: dict[str, int], n_rows: int, vocab: dict[str, int], n: int) -> torch.Tensor:
    """(R,) the model's row for each output row (-1: none). Padding rows map to themselves where
    the model has such a row beyond its own tokens."""
    index = torch.full((n_rows,), -1, dtype=torch.int64)
    for token, row in out_vocab.items():
        mine = vocab.get(token)
        if mine is not None and mine < n and row < n_rows:
            index[row] = mine
    first_pad, mine_pad = _n_tokens(out_vocab), _n_tokens(vocab)
    for row in range(max(first_pad, mine_pad), min(n_rows, n)):
        index[row] = row
    return index


def _note_orphans(out_vocab: dict[str, int], maps: list[torch.Tensor], plan: VocabPlan) -> None:
    """Output tokens that no model has get zero rows: say so."""
    nobody = torch.stack(maps).lt(0).all(0)  # (R,)
    by_row = {row: token for token, row in out_vocab.items()}
    orphans = [by_row[r] for r in nobody.nonzero().squeeze(1).tolist() if r in by_row]
    if orphans:
        shown = ", ".join(repr(t) for t in orphans[:8]) + (" …" if len(orphans) > 8 else "")
        plan.warnings.append(f"{len(orphans)} output token(s) are in no merged model and get zero rows: {shown}.")
