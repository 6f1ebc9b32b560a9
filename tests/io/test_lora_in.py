"""LoRA adapters as experts: graftkit's ``base + ΔW`` against PEFT's ``merge_and_unload`` and
against a full-ΔW computation written here from the saved factors (not through graftkit's parser).

Adapters are made by PEFT itself on a tiny Llama (``init_lora_weights=False``: random, non-zero B).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from tests.conftest import tiny_gpt2, tiny_llama_config
from typer.testing import CliRunner

from graftkit.cli import app
from graftkit.errors import GraftError
from graftkit.io import Checkpoint
from graftkit.merge.api import merge
from graftkit.merge.report import validate_recipe

runner = CliRunner()
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]


def tiny_base():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(num_hidden_layers=2, vocab_size=64)).eval()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lora_base")
    tiny_base().save_pretrained(folder)
    return folder


def make_adapter(folder: Path, seed: int, model=None, **lora) -> PeftModel:
    """A PEFT adapter with random non-zero factors, saved to ``folder``; returns the PEFT model."""
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model if model is not None else tiny_base(), LoraConfig(init_lora_weights=False, **lora)
    )
    peft_model.save_pretrained(folder)
    return peft_model


def merged_by_peft(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}


def graft_merge(tmp_path: Path, recipe: dict) -> dict[str, torch.Tensor]:
    out = tmp_path / "merged"
    merge(recipe, out, progress=False)
    return load_file(out / "model.safetensors")


def full_delta(adapter: Path, alpha: dict[str, float], rslora: bool = False) -> dict[str, torch.Tensor]:
    """ΔW per base tensor from the saved factors: scale · B A with the alphas given here per module kind."""
    factors = load_file(adapter / "adapter_model.safetensors")
    deltas = {}
    for key, a in factors.items():
        if ".lora_A." not in key:
            continue
        b = factors[key.replace(".lora_A.", ".lora_B.")]
        name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        r = a.shape[0]
        kind = name.split(".")[-2]
        deltas[name] = (alpha[kind] / (math.sqrt(r) if rslora else r)) * (b @ a)
    return deltas


def assert_state_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
def test_one_adapter_at_weight_1_equals_merge_and_unload(tmp_path, base_dir, method):
    peft_model = make_adapter(tmp_path / "adapter", 1, r=4, lora_alpha=8, target_modules=ATTN + ["down_proj"])
    expected = merged_by_peft(peft_model)
    recipe = {"merge_method": method, "base_model": str(base_dir), "models": [{"model": str(tmp_path / "adapter")}]}
    got = graft_merge(tmp_path, recipe)
    assert_state_close(got, expected)
    assert not torch.equal(
        got["model.layers.0.self_attn.q_proj.weight"],
        load_file(base_dir / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"],
    )


def test_weights_1_and_minus_1_with_mixed_ranks_and_patterns(tmp_path, base_dir):
    # adapter a: r 4, but q_proj at rank 2 and down_proj at 6 (rank_pattern), v_proj alpha 3 (alpha_pattern)
    a = tmp_path / "a"
    make_adapter(
        a,
        1,
        r=4,
        lora_alpha=8,
        target_modules=ATTN + ["down_proj"],
        rank_pattern={"q_proj": 2, "down_proj": 6},
        alpha_pattern={"v_proj": 3},
    )
    b = tmp_path / "b"
    make_adapter(b, 2, r=8, lora_alpha=4, target_modules=["q_proj", "up_proj"])
    factors = load_file(a / "adapter_model.safetensors")
    assert factors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape[0] == 2
    assert factors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"].shape[0] == 6
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(base_dir),
        "models": [{"model": str(a), "parameters": {"weight": 1.0}}, {"model": str(b), "parameters": {"weight": -1.0}}],
    }
    got = graft_merge(tmp_path, recipe)
    expected = load_file(base_dir / "model.safetensors")
    delta_a = full_delta(a, {"q_proj": 8, "k_proj": 8, "v_proj": 3, "o_proj": 8, "down_proj": 8})
    delta_b = full_delta(b, {"q_proj": 4, "up_proj": 4})
    for name in expected:
        expected[name] = expected[name] + delta_a.get(name, 0) - delta_b.get(name, 0)
    assert_state_close(got, expected)


def test_rslora_scale_is_alpha_over_sqrt_r(tmp_path, base_dir):
    peft_model = make_adapter(tmp_path / "rs", 3, r=4, lora_alpha=8, use_rslora=True, target_modules=["v_proj"])
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(base_dir),
        "models": [{"model": str(tmp_path / "rs")}],
    }
    got = graft_merge(tmp_path, recipe)
    assert_state_close(got, merged_by_peft(peft_model))
    base = load_file(base_dir / "model.safetensors")
    delta = full_delta(tmp_path / "rs", {"v_proj": 8}, rslora=True)["model.layers.0.self_attn.v_proj.weight"]
    torch.testing.assert_close(
        got["model.layers.0.self_attn.v_proj.weight"] - base["model.layers.0.self_attn.v_proj.weight"],
        delta,
        atol=1e-6,
        rtol=0,
    )


def test_embedding_and_fan_in_fan_out_equal_merge_and_unload(tmp_path):
    # an embedding target (lora_embedding_A/B, ΔW = (B A)ᵀ) on the Llama ...
    base = tmp_path / "llama"
    tiny_base().save_pretrained(base)
    peft_model = make_adapter(tmp_path / "emb", 4, r=4, lora_alpha=4, target_modules=["embed_tokens", "o_proj"])
    recipe = {"merge_method": "linear", "base_model": str(base), "models": [{"model": str(tmp_path / "emb")}]}
    assert_state_close(graft_merge(tmp_path / "m1", recipe), merged_by_peft(peft_model))
    # ... and GPT-2's Conv1D weights, stored (in, out): fan_in_fan_out
    gpt2 = tmp_path / "gpt2"
    tiny_gpt2().save_pretrained(gpt2)
    peft_model = make_adapter(
        tmp_path / "c", 5, model=tiny_gpt2(), r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True
    )
    recipe = {"merge_method": "task_arithmetic", "base_model": str(gpt2), "models": [{"model": str(tmp_path / "c")}]}
    expected = {k: v for k, v in merged_by_peft(peft_model).items() if k != "lm_head.weight"}  # tied
    assert_state_close(graft_merge(tmp_path / "m2", recipe), expected)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"use_dora": True}, "use_dora"),
        ({"peft_type": "IA3"}, "peft_type"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights"),
    ],
)
def test_unsupported_adapters_are_refused_by_name(tmp_path, base_dir, edit, named):
    adapter = tmp_path / "adapter"
    make_adapter(adapter, 1, r=2, lora_alpha=2, target_modules=["q_proj"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **edit}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"merge_method": "linear", "base_model": str(base_dir), "models": [{"model": str(adapter)}]})
    )
    result = runner.invoke(app, ["validate", str(recipe)])
    assert isinstance(result.exception, GraftError), result.output
    message = str(result.exception)
    assert f"`{named}`" in message and "merge_and_unload" in message


def test_real_dora_adapter_is_refused(tmp_path, base_dir):
    make_adapter(tmp_path / "dora", 1, r=2, lora_alpha=2, target_modules=["q_proj"], use_dora=True)
    recipe = {"merge_method": "linear", "base_model": str(base_dir), "models": [{"model": str(tmp_path / "dora")}]}
    with pytest.raises(GraftError, match="use_dora"):
        merge(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_validate_names_the_adapter_from_headers_only(tmp_path, base_dir, monkeypatch):
    make_adapter(tmp_path / "a", 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"merge_method": "task_arithmetic", "base_model": str(base_dir), "models": [{"model": str(tmp_path / "a")}]}
        )
    )

    def no_reads(*args, **kwargs):
        raise AssertionError("validation read tensor data")

    monkeypatch.setattr(Checkpoint, "read", no_reads)
    monkeypatch.setattr(Checkpoint, "read_mapped", no_reads)
    summary = validate_recipe(recipe)
    assert "LoRA adapter" in summary and "rank 4" in summary and "scale 2" in summary
    assert "4 tensors (q_proj, v_proj)" in summary


def test_adapter_errors_before_any_read(tmp_path, base_dir):
    make_adapter(tmp_path / "a", 1, r=4, lora_alpha=8, target_modules=["q_proj"])
    no_base = {"merge_method": "linear", "models": [{"model": str(tmp_path / "a")}]}
    with pytest.raises(GraftError, match="base_model"):
        merge(no_base, tmp_path / "out", progress=False)
    as_base = {"merge_method": "linear", "base_model": str(tmp_path / "a"), "models": [{"model": str(base_dir)}]}
    with pytest.raises(GraftError, match="is a LoRA adapter, not a model"):
        merge(as_base, tmp_path / "out", progress=False)
    from transformers import LlamaForCausalLM

    wider = tmp_path / "wider"
    LlamaForCausalLM(
        tiny_llama_config(num_hidden_layers=2, vocab_size=64, hidden_size=48, num_attention_heads=4)
    ).save_pretrained(wider)
    wrong_base = {"merge_method": "linear", "base_model": str(wider), "models": [{"model": str(tmp_path / "a")}]}
    with pytest.raises(GraftError, match=r"q_proj.*do not make a rank-4 update"):
        merge(wrong_base, tmp_path / "out", progress=False)
    shutil.copy(base_dir / "model.safetensors", tmp_path / "a" / "model.safetensors")
    both = {"merge_method": "linear", "base_model": str(base_dir), "models": [{"model": str(tmp_path / "a")}]}
    with pytest.raises(GraftError, match="holds both a PEFT adapter"):
        merge(both, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_merge_check_refuses_adapter_parents_before_merging(tmp_path, base_dir):
    make_adapter(tmp_path / "a", 1, r=2, lora_alpha=2, target_modules=["q_proj"])
    recipe = tmp_path / "r.yaml"
    models = [{"model": str(tmp_path / "a")}]
    recipe.write_text(
        yaml.safe_dump({"merge_method": "task_arithmetic", "base_model": str(base_dir), "models": models})
    )
    result = runner.invoke(app, ["merge", str(recipe), "-o", str(tmp_path / "out"), "--check"])
    assert isinstance(result.exception, GraftError), result.output
    assert "LoRA adapter folder" in str(result.exception) and "graft check OUT --against BASE" in str(result.exception)
    assert not (tmp_path / "out").exists()  # refused before any merge
