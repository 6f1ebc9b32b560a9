"""Tiny checkpoints for the I/O tests, built on the fly (no network)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 2-layer Llama saved by ``save_pretrained`` in several safetensors shards, and its state dict."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder, max_shard_size="20KB")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return folder, state


@pytest.fixture
def raw_safetensors() -> Callable[..., Path]:
    """``write(path, header, data, header_len=None)``: a safetensors file with any header, valid or not."""
    return _write_raw_safetensors


def _write_raw_safetensors(path: Path, header: dict, data: bytes, header_len: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    n = len(raw) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path
