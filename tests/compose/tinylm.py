"""Tiny randomly initialised causal LMs built from configs (no network), shared by the compose tests."""

from __future__ import annotations

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
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=128,
        initializer_range=0.3,
        bos_token_id=0,
        eos_token_id=1,
    )
    return GPT2LMHeadModel(config).eval()


def randomize_bridge(model, seed: int = 0, scale: float = 0.5) -> None:
    """Give every bridge parameter a non-zero value (an untrained bridge adds exactly nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.bridge_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale / max(1, p.shape[-1]) ** 0.5)


def char_tokenizer():
    """A character-level fast tokenizer over digits, lowercase letters and a few symbols (< VOCAB ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>"]
    chars = "abcdefghijklmnopqrstuvwxyz0123456789+-= "
    vocab = {tok: i for i, tok in enumerate([*specials, *chars])}
    assert len(vocab) <= VOCAB
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
