"""Log-likelihood scoring: how probable a model finds given continuations of a prompt.

Two uses: multiple-choice accuracy (the candidate with the highest summed log-probability
wins) and the mean per-token loss of the gold answers, a perplexity probe that moves before
exact match does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from graftkit.evaluate.batching import encode, length_batches, model_device, pad_id, right_pad
from graftkit.zoo.tasks.base import Example


@dataclass(frozen=True)
class Choice:
    """A multiple-choice item: a prompt, its candidate answers and the index of the right one."""

    prompt: str
    candidates: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if not 0 <= self.gold < len(self.candidates):
            raise ValueError(f"gold index {self.gold} outside the {len(self.candidates)} candidates")


@dataclass(frozen=True)
class ChoiceScore:
    """The summed log-probability of every candidate of one :class:`Choice`."""

    choice: Choice
    logprobs: tuple[float, ...]

    @property
    def predicted(self) -> int:
        """Index of the most probable candidate (the first one on ties)."""
        return max(range(len(self.logprobs)), key=lambda i: (self.logprobs[i], -i))

    @property
    def correct(self) -> bool:
        return self.predicted == self.choice.gold


@torch.inference_mode()
def continuation_logprobs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 64,
    prepend_bos: bool = True,
    append_eos: bool = True,
) -> list[tuple[float, int]]:
    """``sum log p(continuation | prompt)`` for each ``(prompt, continuation)`` pair.

    The prompt and continuation are encoded separately and concatenated, so the boundary is
    exact. With ``append_eos`` the eos token counts as part of the continuation, which is what
    tells ``"12"`` from ``"123"`` when one candidate is a prefix of another.

    Args:
        model: a causal LM whose ``forward(input_ids, attention_mask)`` returns ``.logits``.
        tokenizer: its tokenizer.
        pairs: ``(prompt, continuation)`` strings.
        batch_size: sequences per forward pass (right-padded).
        prepend_bos: encode the prompt as ``bos + prompt``.
        append_eos: score ``continuation + eos``.

    Returns:
        ``(summed log-probability, number of scored tokens)`` per pair, in order.
    """
    device = model_device(model)
    rows: list[tuple[list[int], int]] = []  # (full ids, index where the continuation starts)
    for prompt, continuation in pairs:
        context = encode(tokenizer, prompt, prepend_bos=prepend_bos)
        target = encode(tokenizer, continuation)
        if append_eos:
            if tokenizer.eos_token_id is None:
                raise ValueError("the tokenizer has no eos token; pass append_eos=False")
            target.append(tokenizer.eos_token_id)
        if not context or not target:
            raise ValueError(f"empty prompt or continuation in pair {(prompt, continuation)!r}")
        rows.append((context + target, len(context)))

    results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    pad = pad_id(tokenizer)
    for idx in length_batches([len(full) for full, _ in rows], batch_size):
        # The last token is never an input whose prediction we need.
        ids, mask = right_pad([rows[i][0][:-1] for i in idx], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
        for b, i in enumerate(idx):
            full, start = rows[i]
            targets = torch.tensor(full[start:], device=logits.device)  # (C,)
            # logits at t predict token t + 1, so the continuation is read from start - 1 on.
            lp = logits[b, start - 1 : len(full) - 1].float().log_softmax(dim=-1)  # (C, V)
            results[i] = (float(lp.gather(-1, targets[:, None]).sum()), len(targets))
    return results


def score_choices(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Choice],
    *,
    batch_size: int = 64,
    prepend_bos: bool = True,
    append_eos: bool = True,
) -> list[ChoiceScore]:
    """Score every candidate of every item with :func:`continuation_logprobs`.

    Returns:
        One :class:`ChoiceScore` per item, in order; ``.correct`` is argmax == gold.
    """
    pairs = [(item.prompt, c) for item in items for c in item.candidates]
    flat = continuation_logprobs(
        model, tokenizer, pairs, batch_size=batch_size, prepend_bos=prepend_bos, append_eos=append_eos
    )
    out: list[ChoiceScore] = []
    at = 0
    for item in items:
        k = len(item.candidates)
        out.append(ChoiceScore(item, tuple(lp for lp, _ in flat[at : at + k])))
        at += k
    return out


def gold_loss(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    batch_size: int = 64,
    prepend_bos: bool = True,
    append_eos: bool = True,
) -> float:
    """Mean negative log-likelihood per gold-answer token (nats), pooled over all examples.

    Pooling is by token, not by example: ``sum of NLL / sum of answer tokens``. Its
    exponential is the perplexity of the answers given their prompts.
    """
    if not examples:
        return math.nan
    scored = continuation_logprobs(
        model,
        tokenizer,
        [(e.prompt, e.answer) for e in examples],
        batch_size=batch_size,
        prepend_bos=prepend_bos,
        append_eos=append_eos,
    )
    return -sum(lp for lp, _ in scored) / sum(n for _, n in scored)
