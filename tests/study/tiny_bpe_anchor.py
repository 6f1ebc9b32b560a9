"""A stand-in for SmolLM2 in tests: a tiny Llama over a tiny byte-level BPE tokenizer, built on the fly.

The tokenizer mimics SmolLM2's where the study depends on it: ChatML specials (``<|im_start|>`` is bos,
``<|im_end|>`` eos and pad), digits split one by one, letters merged into BPE pieces, no bos added by
the tokenizer itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_bpe_tokenizer(vocab_size: int = 360):
    """A byte-level BPE trained on a few hundred chat-style key-value lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 6))) for _ in range(200)]
    corpus = [
        f"<|im_start|>user\nEvaluate {rng.choice(words)} + {rng.randint(1, 99)} - {rng.choice(words)}<|im_end|>"
        for _ in range(400)
    ]
    core = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )


def save_tiny_anchor(folder: Path, layers: int = 8, hidden: int = 32) -> Path:
    """A randomly initialised tied-embedding Llama of ``layers`` blocks and its tokenizer, saved in ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_tiny_study(
    tmp_path_factory: Any, anchor: Path, load: Callable[..., Any], run: Callable[..., dict[str, Any]]
) -> tuple[Any, dict[str, Any], Path]:
    """The quick settings of ``load`` over ``anchor``, ``run`` into a fresh store under ``$GRAFTKIT_CACHE``:
    (settings, result, store root)."""
    import pytest

    from graftkit.study.engine import LocalBackend, UnitStore

    root = tmp_path_factory.mktemp("study_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAFTKIT_CACHE", str(root))
        settings = load(quick=True, overrides=[f"anchor_path={anchor}"])
        result = run(settings, backend=LocalBackend(), store=UnitStore(root))
    return settings, result, root
