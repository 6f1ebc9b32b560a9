"""The KV cache under either name (transformers 5 renamed ``past_key_values`` to ``cache``)."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from graftkit.evaluate.generate import greedy_generate
from graftkit.hf_compat import cache_argument, cache_field, output_cache, with_cache

VOCAB = 11


def counting_output(seen: torch.Tensor, use_cache: bool) -> CausalLMOutputWithPast:
    """Logits that predict (last real token + 1) mod VOCAB; the cache is the token history."""
    logits = torch.full((seen.shape[0], 1, VOCAB), -30.0)
    logits[torch.arange(seen.shape[0]), 0, (seen[:, -1] + 1) % VOCAB] = 0.0
    return CausalLMOutputWithPast(logits=logits, **{cache_field(CausalLMOutputWithPast): seen if use_cache else None})


def history(input_ids: torch.Tensor, cache: torch.Tensor | None) -> torch.Tensor:
    if input_ids.shape[1] == 1 and cache is None:
        raise AssertionError("a decoding step arrived without the cache")
    return input_ids if cache is None else torch.cat([cache, input_ids], dim=1)


class NewNameLM(torch.nn.Module):
    """A model whose forward takes its cache only as ``cache`` (no ``**kwargs`` to swallow the old name)."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False):
        return counting_output(history(input_ids, cache), use_cache)


class OldNameLM(torch.nn.Module):
    """A model whose forward takes its cache only as ``past_key_values``."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return counting_output(history(input_ids, past_key_values), use_cache)


class Wrapper(torch.nn.Module):
    """A PEFT-like wrapper: passes everything on through ``**kwargs``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def get_base_model(self) -> torch.nn.Module:
        return self.model

    def forward(self, input_ids, **kwargs):
        return self.model(input_ids, **kwargs)


@pytest.mark.parametrize("model", [NewNameLM(), OldNameLM(), Wrapper(NewNameLM())], ids=["new", "old", "wrapped"])
def test_greedy_decoding_passes_the_cache_under_the_models_name(model):
    out = greedy_generate(model, [[1, 2], [5]], max_new_tokens=4, eos_token_id=None, pad_token_id=0)
    assert out == [[3, 4, 5, 6], [6, 7, 8, 9]]


def test_the_argument_name_follows_the_forward_signature():
    assert cache_argument(NewNameLM()) == "cache"
    assert cache_argument(OldNameLM()) == "past_key_values"
    assert cache_argument(Wrapper(NewNameLM())) == "cache"
    assert with_cache(OldNameLM(), "c") == {"past_key_values": "c"}


def test_output_cache_reads_the_field_the_output_class_has():
    out = counting_output(torch.tensor([[1, 2]]), use_cache=True)
    assert torch.equal(output_cache(out), torch.tensor([[1, 2]]))
    assert output_cache(counting_output(torch.tensor([[1]]), use_cache=False)) is None
