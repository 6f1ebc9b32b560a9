"""LoRA out: `graft extract-lora` and `graft merge --as-lora` write adapters PEFT loads; at full
rank they reproduce the model's logits, and the reported errors match an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from tests.conftest import tiny_gpt2, tiny_llama_config
from typer.testing import CliRunner

from graftkit.cli import app
from graftkit.errors import GraftError
from graftkit.io.lora_extract import REPORT_FILE, extract_lora, factorize
from graftkit.merge.api import merge

runner = CliRunner()
IDS = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
FULL = 64  # above every layer's smaller side: full rank everywhere


def tiny_llama():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(num_hidden_layers=2, vocab_size=64)).eval()


def fine_tuned(model, seed: int, also: tuple[str, ...] = ()):
    """``model`` with every 2-D non-embedding weight (and the tensors named in ``also``) moved by noise."""
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()  # the head is the embedding
    for name, tensor in state.items():
        embedding = "embed" in name or "wte" in name or "wpe" in name or name in tied
        if (tensor.dim() == 2 and not embedding) or name in also:
            state[name] = tensor + 0.05 * torch.randn(tensor.shape, generator=gen)
    clone = type(model)(model.config).eval()
    clone.load_state_dict(state)
    return clone


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora_out")
    base = tiny_llama()
    base.save_pretrained(root / "base")
    for i in (1, 2):
        fine_tuned(base, seed=i).save_pretrained(root / f"expert{i}")
    return {"root": root, "base": root / "base", "expert1": root / "expert1", "expert2": root / "expert2"}


def load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def with_adapter(base: Path, adapter: Path):
    return PeftModel.from_pretrained(load(base), adapter).eval()


def test_extract_lora_full_rank_reproduces_logits_through_peft(tmp_path, family):
    out = tmp_path / "adapter"
    result = runner.invoke(
        app,
        ["extract-lora", str(family["expert1"]), "--base", str(family["base"]), "--rank", str(FULL), "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "q_proj" in result.output and "relative error" in result.output
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == FULL and config["peft_type"] == "LORA"
    assert "model.layers.0.self_attn.k_proj" in config["target_modules"]
    assert config["rank_pattern"]["model.layers.0.self_attn.k_proj"] == 16  # (16, 32): its full rank
    torch.testing.assert_close(
        logits(with_adapter(family["base"], out)), logits(load(family["expert1"])), atol=1e-4, rtol=0
    )
    assert not torch.allclose(logits(load(family["base"])), logits(load(family["expert1"])), atol=1e-2)


def independent_errors(model: Path, base: Path, adapter: Path) -> dict[str, float]:
    """‖Δ − BA‖_F / ‖Δ‖_F from the two state dicts and the saved factors."""
    m, b = load_file(model / "model.safetensors"), load_file(base / "model.safetensors")
    factors = load_file(adapter / "adapter_model.safetensors")
    errors = {}
    for key, a in factors.items():
        if ".lora_A." in key:
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            delta = m[name] - b[name]
            approx = factors[key.replace(".lora_A.", ".lora_B.")] @ a
            errors[name] = float(torch.linalg.norm(delta - approx) / torch.linalg.norm(delta))
    return errors


def test_reported_errors_are_right_and_shrink_with_rank(tmp_path, family):
    reports = {}
    for rank in (2, 8):
        report = extract_lora(family["expert1"], family["base"], rank, tmp_path / f"r{rank}")
        expected = independent_errors(family["expert1"], family["base"], tmp_path / f"r{rank}")
        assert {t.name: t.rank for t in report.tensors} == dict.fromkeys(expected, rank)
        for t in report.tensors:
            assert t.rel_error == pytest.approx(expected[t.name], abs=1e-5), t.name
        saved = json.loads((tmp_path / f"r{rank}" / REPORT_FILE).read_text())
        assert [t["rel_error"] for t in saved["tensors"]] == [t.rel_error for t in report.tensors]
        reports[rank] = {t.name: t.rel_error for t in report.tensors}
    assert all(reports[2][name] > reports[8][name] for name in reports[2])
    assert len(reports[2]) == 15  # 7 linear layers × 2 blocks, and the (untied) head


def test_factorize_is_the_best_rank_r_approximation():
    delta = torch.randn(12, 20, generator=torch.Generator().manual_seed(3))
    s = torch.linalg.svdvals(delta)
    for r in (1, 4, 12):
        found = factorize(delta, r)
        assert found.a.shape == (r, 20) and found.b.shape == (12, r)
        assert found.rel_error == pytest.approx(float(s[r:].norm() / s.norm()), abs=1e-5)  # Eckart–Young
    assert factorize(torch.zeros(3, 4), 2).rel_error == 0.0


def test_changed_norms_are_skipped_and_reported(tmp_path, family):
    expert = tmp_path / "expert"
    fine_tuned(load(family["base"]), seed=5, also=("model.norm.weight",)).save_pretrained(expert)
    report = extract_lora(expert, family["base"], 4, tmp_path / "a")
    assert [s["name"] for s in report.skipped] == ["model.norm.weight"]
    assert "norm or bias" in report.skipped[0]["reason"] and report.skipped[0]["rel_change"] > 0
    assert report.unchanged == len(load_file(expert / "model.safetensors")) - 1 - len(report.tensors)


def test_gpt2_conv1d_weights_are_fan_in_fan_out(tmp_path):
    base, expert = tmp_path / "base", tmp_path / "expert"
    model = tiny_gpt2().eval()
    model.save_pretrained(base)
    fine_tuned(model, seed=7).save_pretrained(expert)
    extract_lora(expert, base, FULL, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    torch.testing.assert_close(logits(with_adapter(base, tmp_path / "a")), logits(load(expert)), atol=1e-4, rtol=0)


def test_merge_as_lora_equals_the_merge_and_refuses_to_overwrite(tmp_path, family):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "task_arithmetic",
                "base_model": str(family["base"]),
                "models": [
                    {"model": str(family["expert1"]), "parameters": {"weight": 0.7}},
                    {"model": str(family["expert2"])},
                ],
            }
        )
    )
    merged = merge(str(recipe), tmp_path / "merged", progress=False)
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["merge", str(recipe), "-o", str(out), "--as-lora", str(FULL), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "as a LoRA adapter" in result.output and (out / "graft_recipe.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged", "r.yaml"]  # no temporary folder left
    torch.testing.assert_close(logits(with_adapter(family["base"], out)), logits(load(merged)), atol=1e-4, rtol=0)
    before = (out / "adapter_model.safetensors").read_bytes()
    again = runner.invoke(app, ["merge", str(recipe), "-o", str(out), "--as-lora", "2", "--no-progress"])
    assert isinstance(again.exception, GraftError) and "--overwrite" in str(again.exception)
    assert (out / "adapter_model.safetensors").read_bytes() == before
    assert (
        runner.invoke(
            app, ["merge", str(recipe), "-o", str(out), "--as-lora", "2", "--overwrite", "--no-progress"]
        ).exit_code
        == 0
    )
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2


def test_extracted_adapter_reads_back_as_the_model(tmp_path, family):
    adapter = tmp_path / "adapter"
    extract_lora(family["expert1"], family["base"], FULL, adapter)
    recipe = {"merge_method": "linear", "base_model": str(family["base"]), "models": [{"model": str(adapter)}]}
    got = load_file(merge(recipe, tmp_path / "m", progress=False) / "model.safetensors")
    for name, tensor in load_file(family["expert1"] / "model.safetensors").items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=0, msg=name)
