"""Tiny randomly initialised causal LMs built from configs (no network)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

VOCAB = 48


def tiny_llama(seed: int = 0, hidden: int = 32, layers: int = 4, heads: int = 4, vocab: int = VOCAB):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=128,
        initializer_range=0.3,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 1, hidden: int = 24, layers: int = 8, heads: int = 2, vocab: int = VOCAB):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=128, initializer_range=0.3, bos_token_id=0, eos_token_id=1
    )
    return GPT2LMHeadModel(config).eval()


def randomize_bridge(model, seed: int = 0, scale: float = 0.5) -> None:
    """Give every bridge parameter a non-zero value (an untrained bridge adds exactly nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.bridge_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale / max(1, p.shape[-1]) ** 0.5)


@pytest.fixture
def llama_anchor():
    return tiny_llama(seed=0)


@pytest.fixture
def llama_augment():
    return tiny_llama(seed=5, hidden=16, layers=8, heads=2)


@pytest.fixture
def gpt2_anchor():
    return tiny_gpt2(seed=2, hidden=32, layers=4, heads=4)


@pytest.fixture
def gpt2_augment():
    return tiny_gpt2(seed=3)


@pytest.fixture
def tokens():
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(7))
