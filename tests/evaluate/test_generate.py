"""Exact match by greedy decoding: forced models, left padding, eos and decoding."""

from __future__ import annotations

import pytest
import torch

from graftkit.evaluate import batching
from graftkit.evaluate.generate import Prediction, default_max_new_tokens, exact_match, greedy_generate


def test_forced_right_answers_score_100(tokenizer, registry, forced_lm):
    examples = registry.get("tiny_add").examples("test", 23) + registry.get("tiny_echo").examples("test", 23)
    model = forced_lm(tokenizer, {e.prompt: e.answer for e in examples})
    preds = exact_match(model, tokenizer, examples, batch_size=8)
    assert [p.output for p in preds] == [e.answer for e in examples]
    assert all(p.correct for p in preds)


def test_forced_wrong_answers_score_0(tokenizer, registry, forced_lm):
    examples = registry.get("tiny_echo").examples("test", 20)
    model = forced_lm(tokenizer, {e.prompt: "z" + e.answer for e in examples})
    preds = exact_match(model, tokenizer, examples, batch_size=8)
    assert not any(p.correct for p in preds)
    assert [p.output for p in preds] == ["z" + e.answer for e in examples]


def test_decoding_stops_at_eos(tokenizer, registry, forced_lm):
    # After eos the forced model emits "x"; those tokens must not reach the output.
    examples = registry.get("tiny_echo").examples("test", 6)
    model = forced_lm(tokenizer, {e.prompt: e.answer for e in examples}, fallback="x")
    preds = exact_match(model, tokenizer, examples, batch_size=6, max_new_tokens=30)
    assert all("x" not in p.output for p in preds)
    assert all(p.correct for p in preds)


def test_decoding_ends_early_when_all_rows_finish(tokenizer, forced_lm):
    model = forced_lm(tokenizer, {"echo\nab\n=": "ab"})
    out = greedy_generate(
        model,
        [batching.encode(tokenizer, "echo\nab\n=", prepend_bos=True)],
        max_new_tokens=50,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert tokenizer.decode(out[0]) == "ab"
    assert model.calls == 3  # prompt, "a" → "b", "b" → eos


def test_whitespace_is_stripped_before_comparing():
    assert Prediction("p", "42", " 42\n").correct
    assert not Prediction("p", "42", "4 2").correct


def test_default_max_new_tokens_is_longest_answer_plus_margin(tokenizer):
    assert default_max_new_tokens(tokenizer, ["1", "12345", "12"], margin=3) == 8


def test_prompt_encoding_matches_the_zoo_tokenizer(tokenizer):
    # The zoo trains on tokenizer(prompt) = bos + one id per character; evaluation must agree.
    prompt = "add\n12+7\n="
    assert batching.encode(tokenizer, prompt, prepend_bos=True) == tokenizer(prompt)["input_ids"]
    assert batching.encode(tokenizer, prompt) == tokenizer(prompt)["input_ids"][1:]


def _generate(model, rows, tokenizer, eos=None):
    return greedy_generate(model, rows, max_new_tokens=10, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_equals_unbatched_with_left_padding(tokenizer, arch, request):
    # Llama (rotary) checks the mask; GPT-2 (absolute positions) also checks the position ids.
    model = request.getfixturevalue(arch)
    prompts = ["a", "add\n12+7\n=", "echo\nabcdefabcdef\n=", "sort\n93\n=", "zz"]
    rows = [batching.encode(tokenizer, p, prepend_bos=True) for p in prompts]
    alone = [_generate(model, [r], tokenizer)[0] for r in rows]
    together = _generate(model, rows, tokenizer)
    assert together == alone
    assert len({tuple(a) for a in alone}) > 1  # the model does not emit one constant string


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_decoding_equals_full_recompute(tokenizer, arch, request):
    model = request.getfixturevalue(arch)
    row = batching.encode(tokenizer, "add\n12+7\n=", prepend_bos=True)
    cached = _generate(model, [row], tokenizer)[0]
    seq = list(row)
    with torch.no_grad():
        for _ in range(10):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert cached == seq[len(row) :]


def test_batched_equals_unbatched_through_exact_match(tokenizer, registry, llama):
    examples = registry.get("tiny_add").examples("test", 7)
    one = exact_match(llama, tokenizer, examples, batch_size=1, max_new_tokens=6)
    many = exact_match(llama, tokenizer, examples, batch_size=4, max_new_tokens=6)
    assert [p.output for p in one] == [p.output for p in many]


def test_empty_prompt_is_rejected(tokenizer, llama):
    with pytest.raises(ValueError, match="at least one token"):
        _generate(llama, [[]], tokenizer)
