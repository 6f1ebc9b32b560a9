"""Small fixed inputs shared by the method tests."""

from __future__ import annotations

import pytest
import torch

import graftkit.methods  # noqa: F401  (fills METHODS)
from graftkit.methods import METHODS, expert_seed

TASK_VECTOR_METHODS = [name for name, spec in METHODS.items() if spec.needs_base]


def seeds_for(n: int, name: str = "layers.0.weight", seed: int = 0) -> tuple[int, ...]:
    return tuple(expert_seed(seed, i, name) for i in range(n))


@pytest.fixture
def trio() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A (4, 6) base and three experts near it, from a fixed generator."""
    gen = torch.Generator().manual_seed(1234)
    base = torch.randn(4, 6, generator=gen)
    experts = [base + 0.1 * torch.randn(4, 6, generator=gen) for _ in range(3)]
    return base, experts
