"""Fixtures of the study tests: a tiny family of models (base, experts, multitask) on the zoo tokenizer."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from graftkit.zoo.tokenizer import build_tokenizer

FAMILY = ("base", "addition", "reversal", "case_swap", "multitask")


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """A base, an expert per task (small perturbations of it) and a multitask model, zoo tokenizer."""
    root = tmp_path_factory.mktemp("family")
    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    paths = {}
    for i, name in enumerate(FAMILY):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        if i:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.01 * i)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="session")
def tiny_base(tiny_family):
    """A ``folders`` base of the study files over :func:`tiny_family` (zoo tasks, float32 scoring)."""
    held_in = ["addition", "reversal", "case_swap"]
    return {
        "name": "tiny",
        "source": "folders",
        "kind": "pretrained",
        "size": "tiny",
        "held_in": held_in,
        "held_out": ["reverse_swap"],
        "path": str(tiny_family["base"]),
        "experts": {f: str(tiny_family[f]) for f in held_in},
        "multitask_path": str(tiny_family["multitask"]),
        "eval_bf16": False,
    }


@pytest.fixture(scope="session")
def bpe_anchor(tmp_path_factory):
    """A stand-in for SmolLM2 (see ``tiny_bpe_anchor.py``): a tiny Llama over a tiny byte-level BPE, saved once."""
    from tiny_bpe_anchor import save_tiny_anchor

    return save_tiny_anchor(tmp_path_factory.mktemp("tiny_anchor") / "anchor")
