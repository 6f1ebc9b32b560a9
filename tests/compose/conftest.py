"""Fixtures for the compose tests: tiny models from configs, no network."""

from __future__ import annotations

import json

import pytest
import torch
from tinylm import VOCAB, char_tokenizer, tiny_gpt2, tiny_llama

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two threads
# spinning against other processes make decoding loops ~100x slower.
torch.set_num_threads(1)


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


@pytest.fixture
def workspace(tmp_path):
    """Saved tiny anchor (Llama) and augment (GPT-2) with a char tokenizer, and sum examples."""
    tok = char_tokenizer()
    for name, model in (("anchor", tiny_llama(0)), ("augment", tiny_gpt2(3))):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(6) for b in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    return tmp_path
