"""Fixtures for the evaluator: the zoo tokenizer, two tiny tasks, forced models and a tiny Llama."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
import torch
from tests.conftest import tiny_llama_config
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from graftkit.registry import Registry
from graftkit.zoo.tasks.base import Kind, Task
from graftkit.zoo.tokenizer import build_tokenizer


class TinyAdd(Task):
    """Add two numbers below 100 (prompts of different lengths)."""

    name = "tiny_add"
    kind: Kind = "held_in"
    instruction = "add"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randrange(100), rng.randrange(100)
        return f"{a}+{b}", str(a + b)


class TinyEcho(Task):
    """Repeat a word of 1–12 letters (answers of different lengths)."""

    name = "tiny_echo"
    kind: Kind = "held_out"
    instruction = "echo"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = "".join(rng.choice("abcdef") for _ in range(rng.randint(1, 12)))
        return w, w


class ForcedLM(torch.nn.Module):
    """A causal LM that puts (almost) all probability on a fixed continuation of each prompt.

    It reads the real (unmasked) tokens seen so far, so it only answers when the evaluator
    builds the attention mask right; it carries the token history in ``past_key_values``.
    Off every known sequence (including after eos) it predicts ``fallback``, so an evaluator
    that decoded past eos would produce wrong text.

    Args:
        tokenizer: the zoo tokenizer.
        outputs: prompt → text the model emits after ``bos + prompt`` (then eos).
        fallback: the character predicted where no continuation is known.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, outputs: Mapping[str, str], fallback: str = "x"):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.vocab_size = len(tokenizer)
        self.fallback = tokenizer.convert_tokens_to_ids(fallback)
        self.next: dict[tuple[int, ...], int] = {}
        for prompt, text in outputs.items():
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            full = [tokenizer.bos_token_id, *prompt_ids, *text_ids, tokenizer.eos_token_id]
            for t in range(1, len(full)):
                self.next[tuple(full[:t])] = full[t]
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False, **_):
        self.calls += 1
        seen = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        mask = torch.ones_like(seen) if attention_mask is None else attention_mask
        assert mask.shape == seen.shape, "attention mask must cover the cached tokens too"
        batch, width = input_ids.shape
        offset = seen.shape[1] - width
        logits = torch.full((batch, width, self.vocab_size), -30.0)
        for b in range(batch):
            for t in range(width):
                col = offset + t
                prefix = tuple(seen[b, : col + 1][mask[b, : col + 1].bool()].tolist())
                logits[b, t, self.next.get(prefix, self.fallback)] = 0.0
        return CausalLMOutputWithPast(logits=logits, past_key_values=seen if use_cache else None)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    return build_tokenizer()


@pytest.fixture(scope="session")
def registry() -> Registry[Task]:
    reg: Registry[Task] = Registry("task")
    reg.add(TinyAdd.name, TinyAdd())
    reg.add(TinyEcho.name, TinyEcho())
    return reg


@pytest.fixture(scope="session")
def forced_lm():
    """``forced_lm(tokenizer, {prompt: text})`` builds a :class:`ForcedLM`."""
    return ForcedLM


def tiny_llama(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> LlamaForCausalLM:
    """A random Llama (hidden 32, 2 layers) sized for the zoo tokenizer."""
    config = tiny_llama_config(
        vocab_size=len(tokenizer),
        num_hidden_layers=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # Random init is near-uniform; scaling the output head makes greedy choices decisive.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="session")
def llama(tokenizer) -> LlamaForCausalLM:
    return tiny_llama(tokenizer)


@pytest.fixture(scope="session")
def gpt2(tokenizer) -> GPT2LMHeadModel:
    """A random GPT-2: learned absolute positions, so wrong position ids under padding show."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(20.0)  # make positions matter to greedy choices
    return model
