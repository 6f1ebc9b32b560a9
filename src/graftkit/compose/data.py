"""Prompt/completion JSONL → padded batches whose labels cover the completion only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from graftkit.errors import GraftError


@dataclass(frozen=True)
class Example:
    """Token ids and labels (-100 on the prompt) of one example."""

    input_ids: list[int]
    labels: list[int]


def read_jsonl(path: str | Path) -> list[dict[str, str]]:
    """Rows of a JSONL file, each with string ``prompt`` and ``completion``."""
    file = Path(path)
    if not file.is_file():
        raise GraftError(f"Data file {file} does not exist.")
    rows = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
            raise GraftError(f"{file}:{n}: each line needs string fields `prompt` and `completion`.")
        rows.append(row)
    if not rows:
        raise GraftError(f"Data file {file} holds no examples.")
    return rows


def tokenize(rows: list[dict[str, str]], tokenizer: Any, max_length: int, append_eos: bool) -> list[Example]:
    """Tokenize prompt and completion separately so the label boundary is exact; truncate on the right."""
    out = []
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        if append_eos and tokenizer.eos_token_id is not None:
            completion = [*completion, tokenizer.eos_token_id]
        ids = (prompt + completion)[:max_length]
        labels = ([-100] * len(prompt) + completion)[:max_length]
        out.append(Example(ids, labels))
    return out


def collate(examples: list[Example], pad_id: int) -> dict[str, Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask``, ``labels``, all ``(B, T)``."""
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        ids[b, :n], labels[b, :n], mask[b, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def prompt_mask(batch: dict[str, Tensor]) -> Tensor:
    """``(B, T)`` mask of the prompt tokens of a :func:`collate` batch: real tokens without a label.

    As ``augment_attention_mask`` it makes a training forward see what encoder-mode decoding sees:
    anchor position t reads augment positions ≤ t of the prompt only.
    """
    return batch["attention_mask"] * (batch["labels"] == -100)


def micro_batch(examples: list[Example], index: int, batch_size: int, seed: int) -> list[Example]:
    """The ``index``-th micro-batch of a seeded shuffle, reshuffled each epoch.

    A pure function of its arguments, so a resumed run sees exactly the batches it would have seen.
    """
    per_epoch = max(1, len(examples) // batch_size)
    epoch, slot = divmod(index, per_epoch)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    picks = order[slot * batch_size : (slot + 1) * batch_size].tolist()
    return [examples[i] for i in picks]
