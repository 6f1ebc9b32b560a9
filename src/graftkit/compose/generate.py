"""Decoding from a composed model with KV caches in every model and in the bridge.

Paper mode (Bansal et al., 2024): each generated token is appended to the anchor *and* the
augments, so one new token costs one cached step of each model plus the projection of one augment
state per connection. Encoder mode (the paper's ablation): the augments read only the prompt; their
projected keys/values are computed once and reused for every generated token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from graftkit.errors import GraftError
from graftkit.hf_compat import output_cache

if TYPE_CHECKING:
    from graftkit.compose.model import ComposedModel

Mode = Literal["paper", "encoder"]


def next_token(
    logits: Tensor,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Greedy or sampled next token from last-position logits ``(B, V)``: ``(B,)``."""
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits.float() / max(temperature, 1e-6)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: ComposedModel,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    mode: Mode = "paper",
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    attention_mask: Tensor | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue ``input_ids`` by up to ``max_new_tokens`` tokens.

    Args:
        model: the composed model.
        input_ids: ``(B, P)`` prompts, left-padded when their lengths differ.
        max_new_tokens: tokens to add.
        mode: ``"paper"`` (augments read every token) or ``"encoder"`` (augments read the prompt only).
        do_sample, temperature, top_k, generator: sampling controls; greedy when ``do_sample`` is False.
        attention_mask: ``(B, P)`` prompt padding mask.
        eos_token_id: a row stops after emitting it and is filled with it afterwards.

    Returns:
        ``(B, P + N)`` prompts followed by the generated tokens, ``N ≤ max_new_tokens``.
    """
    if mode not in ("paper", "encoder"):
        raise GraftError(f"generate(mode={mode!r}): valid modes are 'paper' and 'encoder'.")
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    out = model(input_ids, attention_mask=mask, use_cache=True)  # prefill: every model reads the prompt
    cache, logits = output_cache(out), out.logits[:, -1]
    sequences = input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        token = next_token(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, generator=generator)
        if eos_token_id is not None:
            token = token.masked_fill(done, eos_token_id)
            done |= token == eos_token_id
        sequences = torch.cat([sequences, token[:, None]], dim=1)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model(
            token[:, None],
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            update_augments=mode == "paper",
        )
        cache, logits = output_cache(out), out.logits[:, -1]
    return sequences


def generate_text(
    model: ComposedModel,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    **kwargs: Any,
) -> list[str]:
    """Decode ``prompts`` (left-padded into one batch) and return only the generated text of each.

    ``kwargs`` go to :func:`generate`; ``eos_token_id`` defaults to the tokenizer's.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    device = next(model.parameters()).device
    kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    out = generate(model, ids.to(device), max_new_tokens, attention_mask=mask.to(device), **kwargs)
    return tokenizer.batch_decode(out[:, width:].cpu(), skip_special_tokens=True)
