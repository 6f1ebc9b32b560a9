"""`graft check`: a sane merge passes; NaN, a loss blow-up and a copy of the base are flagged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import typer
from tests.conftest import tiny_llama_config
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from graftkit.evaluate.sanity import FALLBACK_TEXTS, SanityCheckError, check_after_merge, sanity_check
from graftkit.inspect_cli import check_command, inspect_command
from graftkit.zoo.tokenizer import build_tokenizer


def _config(tokenizer) -> LlamaConfig:
    return tiny_llama_config(
        num_hidden_layers=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _save_state(root: Path, name: str, config: LlamaConfig, state: dict, tokenizer=None) -> Path:
    model = LlamaForCausalLM(config)
    model.load_state_dict(state)
    model.save_pretrained(root / name)
    if tokenizer is not None:
        tokenizer.save_pretrained(root / name)
    return root / name


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, Path]:
    """A base, two noisy experts and four candidate "merges" (the tokenizer only in the parents)."""
    root = tmp_path_factory.mktemp("check")
    tok = build_tokenizer()
    config = _config(tok)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).state_dict()

    def noisy(seed: int, scale: float) -> dict:
        gen = torch.Generator().manual_seed(seed)
        return {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in base.items()}

    paths = {"base": _save_state(root, "base", config, base, tok)}
    for i in range(2):
        paths[f"expert{i}"] = _save_state(root, f"expert{i}", config, noisy(10 + i, 0.02), tok)
    paths["equal_expert"] = _save_state(root, "equal_expert", config, noisy(10, 0.02))
    paths["copy_of_base"] = _save_state(root, "copy_of_base", config, dict(base))
    nan = dict(base)
    nan["model.layers.1.mlp.down_proj.weight"] = torch.full_like(base["model.layers.1.mlp.down_proj.weight"], math.nan)
    paths["nan"] = _save_state(root, "nan", config, nan)
    gen = torch.Generator().manual_seed(99)
    paths["huge"] = _save_state(
        root, "huge", config, {k: 5.0 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    )
    return paths


def _experts(family) -> list[Path]:
    return [family["expert0"], family["expert1"]]


def test_a_merge_equal_to_a_parent_passes(family):
    report = check_after_merge(family["equal_expert"], family["base"], _experts(family))
    assert report.ok, report.flags
    assert report.merged.loss == pytest.approx(report.experts[0].loss, abs=1e-6)
    assert report.merged.finite and all(p.finite for p in report.parents)
    assert len(report.texts) >= 8 and report.texts_source.startswith("zoo tasks")


def test_nan_weights_are_flagged(family):
    report = sanity_check(family["nan"], family["base"], _experts(family))
    assert not report.ok
    assert any(f.startswith("non-finite") and "logits" in f for f in report.flags)
    assert any("model.layers.1.mlp.down_proj.weight" in f for f in report.flags)


def test_a_loss_far_above_every_parent_is_flagged(family):
    report = sanity_check(family["huge"], family["base"], _experts(family))
    worst = max(p.loss for p in report.parents)
    assert report.merged.loss > 2 * worst + 1
    assert [f.split(":")[0] for f in report.flags] == ["loss"]


def test_a_copy_of_the_base_is_flagged_as_identical(family):
    report = sanity_check(family["copy_of_base"], family["base"], _experts(family))
    assert [f.split(":")[0] for f in report.flags] == ["identical"]
    assert "all its weights equal" in report.flags[0]
    assert report.merged.logits_sha256 == report.base.logits_sha256
    # Without experts the check has no evidence a copy was intended, so it still flags.
    assert not sanity_check(family["copy_of_base"], family["base"], []).ok
    # When every expert equals the base too, reproducing the base is right.
    same = sanity_check(family["copy_of_base"], family["base"], [family["base"]])
    assert same.ok and same.notes


def test_texts_file_is_the_probe(family, tmp_path):
    lines = ["hello world", "", "the sum is 12", "abc abc abc"]
    path = tmp_path / "probe.txt"
    path.write_text("\n".join(lines))
    report = sanity_check(family["equal_expert"], family["base"], _experts(family), path)
    assert report.texts == ["hello world", "the sum is 12", "abc abc abc"]
    assert report.texts_source == str(path)

    # Parity: the probe loss equals a direct forward over the same tokens.
    tok = build_tokenizer()
    model = LlamaForCausalLM.from_pretrained(family["equal_expert"]).eval()
    nll, n = 0.0, 0
    for text in report.texts:
        ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            out = model(input_ids=ids, labels=ids)
        nll += float(out.loss) * (ids.shape[1] - 1)
        n += ids.shape[1] - 1
    assert report.merged.tokens == n
    assert report.merged.loss == pytest.approx(nll / n, rel=1e-4)


def test_fallback_sentences_when_task_texts_cannot_be_encoded(family, monkeypatch):
    import graftkit.evaluate.probe_texts as probe_texts

    monkeypatch.setattr(probe_texts, "task_samples", lambda tasks: ["émoji ✓ unencodable"])
    report = sanity_check(family["equal_expert"], family["base"], [])
    assert report.texts_source == "built-in sentences"
    assert report.texts == list(FALLBACK_TEXTS)


def test_check_command_exits_2_when_flagged_and_0_when_sane(family):
    app = typer.Typer()
    app.command("inspect")(inspect_command)
    app.command("check")(check_command)
    runner = CliRunner()
    args = [*map(str, _experts(family)), "--against", str(family["base"]), "--tasks", "addition,reversal"]

    good = runner.invoke(app, ["check", str(family["equal_expert"]), *args, "--json"])
    assert good.exit_code == 0, good.output
    data = json.loads(good.stdout)
    assert data["ok"] and data["texts_source"] == "zoo tasks (addition, reversal)"
    assert [m["role"] for m in data["models"]] == ["merged", "base", "expert 0", "expert 1"]

    bad = runner.invoke(app, ["check", str(family["nan"]), *args])
    assert isinstance(bad.exception, SanityCheckError) and bad.exception.exit_code == 2
    assert "FLAG" in bad.output and "non-finite" in str(bad.exception)
