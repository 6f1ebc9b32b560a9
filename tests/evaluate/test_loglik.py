"""Log-likelihood scoring: forced candidates win, gold loss, parity with a plain forward pass."""

from __future__ import annotations

import math

import pytest
import torch

from graftkit.evaluate.batching import encode
from graftkit.evaluate.loglik import Choice, continuation_logprobs, gold_loss, score_choices
from graftkit.zoo.tasks.base import Example

ITEMS = [
    Choice("add\n2+2\n=", ("4", "5", "44"), gold=0),
    Choice("echo\nabc\n=", ("ab", "abc", "abcd", "cba"), gold=1),
    Choice("add\n10+90\n=", ("10", "100", "1000"), gold=1),
]


@pytest.mark.parametrize("forced", [0, 1, 2])
def test_loglik_picks_the_forced_candidate(tokenizer, forced_lm, forced):
    # Candidates include prefixes of one another ("4" / "44"), told apart by the eos token.
    model = forced_lm(tokenizer, {item.prompt: item.candidates[forced] for item in ITEMS})
    scores = score_choices(model, tokenizer, ITEMS, batch_size=4)
    assert [s.predicted for s in scores] == [forced] * len(ITEMS)
    assert [s.correct for s in scores] == [forced == item.gold for item in ITEMS]


def test_gold_loss_is_near_zero_when_forced_right_and_large_when_wrong(tokenizer, forced_lm):
    examples = [Example("add\n2+2\n=", "4"), Example("echo\nabc\n=", "abc")]
    right = forced_lm(tokenizer, {e.prompt: e.answer for e in examples})
    wrong = forced_lm(tokenizer, {e.prompt: "z" + e.answer for e in examples})
    assert gold_loss(right, tokenizer, examples) < 1e-6
    assert gold_loss(wrong, tokenizer, examples) > 5.0


def _reference_logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    """The same quantity from one unpadded forward pass, written out separately."""
    context = encode(tokenizer, prompt, prepend_bos=True)
    target = encode(tokenizer, continuation) + [tokenizer.eos_token_id]
    ids = torch.tensor([context + target])
    with torch.no_grad():
        logp = model(ids).logits[0].log_softmax(-1)
    return sum(float(logp[len(context) - 1 + i, tok]) for i, tok in enumerate(target))


def test_batched_loglik_equals_single_forward(tokenizer, llama):
    pairs = [("add\n2+2\n=", "4"), ("echo\nabcdefabcdef\n=", "abcdefabcdef"), ("a", "bc")]
    got = continuation_logprobs(llama, tokenizer, pairs, batch_size=3)
    for (prompt, cont), (lp, n) in zip(pairs, got, strict=True):
        assert n == len(cont) + 1
        assert lp == pytest.approx(_reference_logprob(llama, tokenizer, prompt, cont), abs=1e-4)


def test_gold_loss_pools_by_token(tokenizer, llama):
    examples = [Example("add\n2+2\n=", "4"), Example("echo\nabcdef\n=", "abcdef")]
    total = sum(_reference_logprob(llama, tokenizer, e.prompt, e.answer) for e in examples)
    assert gold_loss(llama, tokenizer, examples) == pytest.approx(-total / (2 + 7), abs=1e-5)
    assert math.isnan(gold_loss(llama, tokenizer, []))


def test_choice_rejects_gold_out_of_range():
    with pytest.raises(ValueError, match="gold index"):
        Choice("p", ("a", "b"), gold=2)
