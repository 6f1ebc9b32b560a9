from __future__ import annotations

import json

import pytest
import torch
from tinylm import randomize_bridge, tiny_gpt2, tiny_llama

from graftkit.compose import bridge_param_count, compose, load_bridge
from graftkit.errors import GraftError


@pytest.fixture
def trained(llama_anchor, gpt2_augment):
    model = compose(llama_anchor, gpt2_augment)
    randomize_bridge(model, scale=3.0)
    return model


def test_save_load_round_trip(trained, tokens, tmp_path):
    trained.save_bridge(tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert files == ["bridge.json", "bridge.safetensors"]
    manifest = json.loads((tmp_path / "b" / "bridge.json").read_text())
    assert manifest["augments"][0]["connections"] == [c.model_dump() for c in trained.connections[0]]
    assert manifest["parameters"]["bridge"] == bridge_param_count(trained).bridge
    # Fresh copies of the same frozen models (same seeds).
    loaded = load_bridge(tmp_path / "b", anchor=tiny_llama(0), augments=[tiny_gpt2(3)])
    assert torch.equal(loaded(tokens).logits, trained(tokens).logits)


def test_safetensors_holds_only_bridge(trained, tmp_path):
    from safetensors import safe_open

    trained.save_bridge(tmp_path)
    with safe_open(str(tmp_path / "bridge.safetensors"), "pt") as f:
        names = f.keys()
        assert set(names) == set(trained.state_dict())
        assert sum(f.get_tensor(k).numel() for k in names) == bridge_param_count(trained).bridge


def test_load_refuses_other_weights(trained, tmp_path):
    trained.save_bridge(tmp_path)
    with pytest.raises(GraftError, match="augment 0 does not match"):
        load_bridge(tmp_path, anchor=tiny_llama(0), augments=tiny_gpt2(99))  # same shape, other weights
    with pytest.raises(GraftError, match="anchor does not match"):
        load_bridge(tmp_path, anchor=tiny_llama(1), augments=tiny_gpt2(3))
    load_bridge(tmp_path, anchor=tiny_llama(1), augments=tiny_gpt2(3), verify=False)


def test_load_from_recorded_paths(tmp_path, tokens):
    anchor, augment = tiny_llama(0), tiny_gpt2(3)
    anchor.save_pretrained(tmp_path / "anchor")
    augment.save_pretrained(tmp_path / "augment")
    from transformers import AutoModelForCausalLM

    model = compose(
        AutoModelForCausalLM.from_pretrained(tmp_path / "anchor"),
        AutoModelForCausalLM.from_pretrained(tmp_path / "augment"),
    )
    randomize_bridge(model, scale=3.0)
    model.save_bridge(tmp_path / "bridge")
    manifest = json.loads((tmp_path / "bridge" / "bridge.json").read_text())
    assert manifest["anchor"]["path"] == str((tmp_path / "anchor").resolve())
    loaded = load_bridge(tmp_path / "bridge")  # models come from the recorded folders
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)
    # bfloat16 copies of the same checkpoints still match their fingerprints.
    load_bridge(tmp_path / "bridge", dtype=torch.bfloat16)


def test_fingerprint_samples_tensors_past_float32_precision():
    """A 49,152 x 576 embedding (SmolLM2's) has more entries than float32 counts exactly (2**24): the
    sampled positions must stay inside it and include its last entry."""
    from types import SimpleNamespace

    from graftkit.compose.files import fingerprint, sample_positions

    numel = 49_152 * 576
    idx = sample_positions(numel, 1024)
    assert idx[0] == 0 and idx[-1] == numel - 1 and len(idx) == 1024
    assert bool((idx[1:] > idx[:-1]).all())
    assert sample_positions(5, 1024).tolist() == [0, 1, 2, 3, 4]

    big = torch.nn.Module()
    big.register_buffer("table", torch.zeros(numel, dtype=torch.uint8))
    big.config = SimpleNamespace()
    first = fingerprint(big)
    big.table[-1] = 1  # the last entry is sampled
    assert fingerprint(big) != first
