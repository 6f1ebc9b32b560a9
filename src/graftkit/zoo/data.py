"""Training batches, each a pure function of (seed, step), so a resumed run sees the same data.

Two shapes: task examples (``<bos> prompt answer <eos>``, loss on ``answer <eos>`` only, right-padded
to the longest row) and packed pre-training text (documents joined as ``<bos> doc <eos>``, cut into
rows of ``seq_len`` tokens, loss everywhere).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from graftkit.zoo.tasks import TASKS, Example
from graftkit.zoo.tasks.pretrain import pretrain_document

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE = -100
"""Label of positions without loss (prompt and padding), as ``transformers`` expects."""


def draw_examples(families: Sequence[str], batch_size: int, seed: int, step: int) -> list[Example]:
    """The training examples of one step: each from a family chosen uniformly, train split only."""
    tasks = [TASKS.get(name) for name in families]
    rng = random.Random(f"examples/{seed}/{step}")
    return [rng.choice(tasks).draw("train", rng) for _ in range(batch_size)]


def encode_examples(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels (answer and ``<eos>`` only), each ``(B, T)``, ``T <= seq_len``.

    Rows longer than ``seq_len`` lose the start of their prompt, never the answer.
    """
    import torch

    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=True)["input_ids"]
    answers = tokenizer([e.answer for e in examples], add_special_tokens=False)["input_ids"]
    rows = []
    for p, a in zip(prompts, answers, strict=True):
        ids = (p + a + [tokenizer.eos_token_id])[-seq_len:]
        n_answer = min(len(a) + 1, len(ids))
        rows.append((ids, [IGNORE] * (len(ids) - n_answer) + ids[-n_answer:]))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def text_batch(
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    seq_len: int,
    seed: int,
    step: int,
    document: Callable[[random.Random], str] = pretrain_document,
) -> dict[str, torch.Tensor]:
    """Packed pre-training rows ``(B, seq_len)`` of fresh documents; labels equal the inputs."""
    import torch

    rng = random.Random(f"pretrain/{seed}/{step}")
    need = batch_size * seq_len
    ids: list[int] = []
    while len(ids) < need:
        doc = tokenizer(document(rng), add_special_tokens=True)["input_ids"]
        ids += doc + [tokenizer.eos_token_id]
    input_ids = torch.tensor(ids[:need]).view(batch_size, seq_len)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}
