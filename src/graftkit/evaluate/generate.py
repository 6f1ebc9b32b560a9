"""Exact-match scoring by batched greedy decoding with the KV cache.

The decoding loop is written out here rather than delegated to ``model.generate`` so that it
works for any causal LM whose ``forward(input_ids, attention_mask, position_ids, cache,
use_cache)`` returns ``.logits`` and ``.cache`` (``past_key_values`` before transformers 5, see
:mod:`graftkit.hf_compat`), and so that the left-padding arithmetic (position ids counted over
real tokens only) is visible and tested: a batched run gives the same tokens as running each
prompt alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from graftkit.evaluate.batching import encode, left_pad, length_batches, model_device, pad_id, positions
from graftkit.hf_compat import output_cache, with_cache
from graftkit.zoo.tasks.base import Example

#: Tokens allowed beyond the longest answer (room for eos and a little overrun).
DEFAULT_MARGIN = 4


@dataclass(frozen=True)
class Prediction:
    """One decoded example: what was asked, expected and produced."""

    prompt: str
    answer: str
    output: str

    @property
    def correct(self) -> bool:
        """Exact match after stripping surrounding whitespace from both sides."""
        return self.output.strip() == self.answer.strip()


@torch.inference_mode()
def greedy_generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
) -> list[list[int]]:
    """Greedy-decode one batch of token-id prompts, left-padded, reusing the KV cache.

    Args:
        model: a causal LM (see the module docstring for the call it must accept).
        prompts: B non-empty prompts as token ids.
        max_new_tokens: the most tokens generated per prompt.
        eos_token_id: a row stops at this token (excluded from the result); None never stops.
        pad_token_id: fills padding and the steps after a row has stopped.

    Returns:
        B lists of new token ids, eos and everything after it removed.
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (encode with a bos token)")
    device = model_device(model)
    ids, mask = left_pad(prompts, pad_token_id)
    ids, mask = ids.to(device), mask.to(device)  # (B, T)
    pos = positions(mask)  # (B, T): first real token at 0 in every row
    batch = ids.shape[0]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    steps: list[torch.Tensor] = []
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    next_pos = pos[:, -1:] + 1  # (B, 1)
    for step in range(max_new_tokens):
        token = out.logits[:, -1, :].argmax(dim=-1)  # (B,)
        token = torch.where(done, torch.full_like(token, pad_token_id), token)
        steps.append(token)
        if eos_token_id is not None:
            done |= token == eos_token_id
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        # The new token is real for every row; finished rows are decoded on but ignored.
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=-1)  # (B, T + step + 1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_pos,
            use_cache=True,
            **with_cache(model, output_cache(out)),
        )
        next_pos = next_pos + 1
    if not steps:
        return [[] for _ in range(batch)]
    new = torch.stack(steps, dim=1).tolist()  # (B, S)
    result = []
    for row in new:
        if eos_token_id is not None and eos_token_id in row:
            row = row[: row.index(eos_token_id)]
        result.append(row)
    return result


def default_max_new_tokens(
    tokenizer: PreTrainedTokenizerBase, answers: Sequence[str], margin: int = DEFAULT_MARGIN
) -> int:
    """Tokens in the longest answer plus ``margin``."""
    longest = max((len(encode(tokenizer, a)) for a in answers), default=0)
    return longest + margin


def generate_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    prepend_bos: bool = True,
) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only, special tokens dropped), in input order."""
    encoded = [encode(tokenizer, p, prepend_bos=prepend_bos) for p in prompts]
    outputs: list[str] = [""] * len(prompts)
    pad = pad_id(tokenizer)
    for idx in length_batches([len(e) for e in encoded], batch_size):
        new = greedy_generate(
            model,
            [encoded[i] for i in idx],
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad,
        )
        for i, row in zip(idx, new, strict=True):
            outputs[i] = tokenizer.decode(row, skip_special_tokens=True)
    return outputs


def exact_match(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
    prepend_bos: bool = True,
    margin: int = DEFAULT_MARGIN,
) -> list[Prediction]:
    """Decode every example greedily and compare with its answer.

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer (must decode a list of ids back to text).
        examples: prompts and answers.
        batch_size: prompts decoded together.
        max_new_tokens: defaults to :func:`default_max_new_tokens` over the answers.
        prepend_bos: encode each prompt as ``bos + prompt`` (how the zoo trains).
        margin: tokens allowed beyond the longest answer when ``max_new_tokens`` is not given.

    Returns:
        One :class:`Prediction` per example, in order.
    """
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(tokenizer, [e.answer for e in examples], margin)
    outputs = generate_texts(
        model,
        tokenizer,
        [e.prompt for e in examples],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        prepend_bos=prepend_bos,
    )
    return [Prediction(e.prompt, e.answer, o) for e, o in zip(examples, outputs, strict=True)]
