"""Fixtures for the compose tests: tiny models from configs, no network."""

from __future__ import annotations

import pytest
import torch
from tinylm import VOCAB, tiny_gpt2, tiny_llama

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
