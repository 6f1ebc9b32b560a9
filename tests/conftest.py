"""Shared fixtures: tiny Hugging Face models built on the fly (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models on a 2-core machine with 2 test workers: more than one torch thread per worker only
# oversubscribes the cores (tiny-model decoding was measured ~100x slower with 2 threads).
torch.set_num_threads(1)


TINY_FIELDS = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=96,
    max_position_embeddings=64,
)
"""The tests' tiny decoder shape (hidden 32, 4 heads, 2 KV heads), for any Llama-like config class."""


def tiny_llama_config(**overrides):
    """The tests' tiny Llama (:data:`TINY_FIELDS`); ``overrides`` change any field."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**TINY_FIELDS, **overrides})


def tiny_llama(seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config())


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=96, n_positions=64, tie_word_embeddings=True)
    return GPT2LMHeadModel(config)


def tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=96)
    return BertModel(config)


BUILDERS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "bert": tiny_bert}


def perturbed(model, seed: int, scale: float = 0.02):
    """A copy of ``model`` whose float tensors moved by seeded noise (an 'expert')."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        k: (v + scale * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }
    clone = type(model)(model.config)
    clone.load_state_dict(state)
    return clone


def save_family(root: Path, arch: str, n_experts: int = 3, **save_kwargs) -> tuple[Path, list[Path]]:
    """Save a base and ``n_experts`` perturbed experts of ``arch`` under ``root``."""
    base = BUILDERS[arch]()
    base.save_pretrained(root / "base", **save_kwargs)
    paths = []
    for i in range(n_experts):
        path = root / f"expert{i}"
        perturbed(base, seed=100 + i).save_pretrained(path, **save_kwargs)
        paths.append(path)
    return root / "base", paths


@pytest.fixture(scope="session")
def llama_family(tmp_path_factory) -> tuple[Path, list[Path]]:
    return save_family(tmp_path_factory.mktemp("llama"), "llama")
