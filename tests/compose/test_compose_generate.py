from __future__ import annotations

import pytest
import torch
from tinylm import VOCAB, randomize_bridge

from graftkit.compose import compose
from graftkit.errors import GraftError

PROMPT = 6


def slow_greedy(model, ids, mask, steps, mode):
    """Reference decoding: recompute every model from scratch at each step, no caches.

    Encoder mode is the same forward with the augment padding mask closed after the prompt: the
    augments' states at prompt positions are causal, so they equal a prompt-only run.
    """
    for _ in range(steps):
        aug_mask = mask.clone()
        if mode == "encoder":
            aug_mask[:, PROMPT:] = 0
        logits = model(ids, attention_mask=mask, augment_attention_mask=aug_mask).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


@pytest.fixture
def composed(llama_anchor, gpt2_augment):
    model = compose(llama_anchor, gpt2_augment)
    randomize_bridge(model, scale=3.0)
    return model


@pytest.fixture
def prompt():
    ids = torch.randint(0, VOCAB, (3, PROMPT), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding
    mask[2, :1] = 0
    return ids, mask


@pytest.mark.parametrize("mode", ["paper", "encoder"])
def test_cached_greedy_matches_slow_reference(composed, prompt, mode):
    ids, mask = prompt
    fast = composed.generate(ids, 10, attention_mask=mask, mode=mode)
    assert torch.equal(fast, slow_greedy(composed, ids, mask, 10, mode))
    assert len(set(fast[:, PROMPT:].flatten().tolist())) > 3  # a non-degenerate continuation


def test_modes_differ(composed, prompt):
    ids, mask = prompt
    paper = composed.generate(ids, 10, attention_mask=mask, mode="paper")
    encoder = composed.generate(ids, 10, attention_mask=mask, mode="encoder")
    assert not torch.equal(paper, encoder)


def test_untrained_bridge_generates_like_anchor(llama_anchor, gpt2_augment, prompt):
    ids, _ = prompt
    mask = torch.ones_like(ids)
    expected = llama_anchor.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(compose(llama_anchor, gpt2_augment).generate(ids, 8), expected)


def test_eos_stops_and_pads(composed, prompt):
    ids, mask = prompt
    free = composed.generate(ids, 10, attention_mask=mask)
    eos = int(free[0, PROMPT + 2])
    out = composed.generate(ids, 10, attention_mask=mask, eos_token_id=eos)
    row = out[0, PROMPT:].tolist()
    stop = row.index(eos)
    assert stop <= 2 and all(t == eos for t in row[stop:])


def test_sampling(composed, prompt):
    ids, mask = prompt
    greedy = composed.generate(ids, 6, attention_mask=mask)
    top1 = composed.generate(ids, 6, attention_mask=mask, do_sample=True, top_k=1)
    assert torch.equal(greedy, top1)
    gen = torch.Generator().manual_seed(0)
    a = composed.generate(ids, 6, attention_mask=mask, do_sample=True, temperature=5.0, generator=gen)
    gen.manual_seed(0)
    b = composed.generate(ids, 6, attention_mask=mask, do_sample=True, temperature=5.0, generator=gen)
    assert torch.equal(a, b) and not torch.equal(a, greedy)


def test_unknown_mode(composed, prompt):
    with pytest.raises(GraftError, match="valid modes"):
        composed.generate(prompt[0], 2, mode="decoder")
