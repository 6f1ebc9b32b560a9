"""Turning prompts into padded id tensors, the way the zoo trains on them.

A training sequence in the zoo is ``bos + prompt + answer + eos``, one token per character.
Evaluation encodes the prompt part the same way (``bos`` prepended by us, not by the
tokenizer's post-processor, so the result does not depend on how a tokenizer was saved).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


def encode(tokenizer: PreTrainedTokenizerBase, text: str, *, prepend_bos: bool = False) -> list[int]:
    """Token ids of ``text`` without the tokenizer's own special tokens.

    Args:
        tokenizer: any Hugging Face tokenizer.
        text: the string to encode.
        prepend_bos: put ``tokenizer.bos_token_id`` first (the start of a prompt).

    Raises:
        ValueError: ``prepend_bos`` is set but the tokenizer has no bos token.
    """
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if prepend_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError("the tokenizer has no bos token; pass prepend_bos=False to encode prompts bare")
        ids = [tokenizer.bos_token_id, *ids]
    return ids


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for padding: pad, else eos, else 0 (padded positions are always masked)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged rows flush right, so every row's last token is in the last column.

    Returns:
        ``(input_ids, attention_mask)``, both ``(B, T)`` int64, mask 1 on real tokens.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def right_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged rows flush left. Returns ``(input_ids, attention_mask)``, both ``(B, T)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens: ``(B, T)`` mask → ``(B, T)`` positions.

    With left padding the first real token of every row gets position 0, exactly as when the
    row is run alone; pad columns get 0 too (they are masked, so the value does not matter).
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), to waste little padding.

    Every index appears exactly once; callers put results back with the indices.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
