from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tinylm import char_tokenizer

from graftkit.compose import load_bridge
from graftkit.compose.data import collate, tokenize
from graftkit.compose.recipe import load_recipe
from graftkit.compose.train import lr_factor, train_bridge
from graftkit.errors import GraftError, RecipeError


def recipe(ws, out="out", **optim):
    return {
        "anchor": str(ws / "anchor"),
        "augments": [{"path": str(ws / "augment")}],
        "data": {"train": str(ws / "train.jsonl"), "eval": str(ws / "eval.jsonl")},
        "optim": {"lr": 3e-3, "steps": 4, "warmup": 1, "batch_size": 4, "grad_accum": 2, **optim},
        "output": str(ws / out),
        "eval_every": 2,
        "checkpoint_every": 2,
        "progress": False,
    }


def test_train_writes_bridge_folder(workspace):
    out = train_bridge(recipe(workspace))
    assert {"bridge.safetensors", "bridge.json", "recipe.yaml", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "bridge.json").read_text())
    assert manifest["anchor"]["path"] == str((workspace / "anchor").resolve())
    assert manifest["augments"][0]["connections"] == [
        {"anchor_layer": 1, "augment_layer": 3},
        {"anchor_layer": 3, "augment_layer": 7},
    ]
    assert manifest["training"]["step"] == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all("eval_loss" in r for r in rows)
    assert (out / "checkpoints" / "step-000002" / "trainer.pt").is_file()
    # Only Θ_C is saved, and it moved away from the zero-output start.
    state = load_file(str(out / "bridge.safetensors"))
    assert all(k.startswith("bridge.") for k in state)
    assert state["bridge.0.0.o_proj.weight"].abs().sum() > 0
    model = load_bridge(out)  # models found through bridge.json, fingerprints checked
    ids = torch.tensor([[1, 30, 39, 31, 41]])
    assert not torch.allclose(model(ids).logits, model.anchor(ids).logits)
    assert train_bridge(recipe(workspace)) == out  # done: a rerun returns at once


def test_resume_reproduces_uninterrupted_run(workspace):
    full = train_bridge(recipe(workspace, out="full"))
    # A run interrupted after step 2: only its step-2 checkpoint exists.
    part = workspace / "part"
    shutil.copytree(full / "checkpoints" / "step-000002", part / "checkpoints" / "step-000002")
    resumed = train_bridge(recipe(workspace, out="part"))
    a, b = load_file(str(full / "bridge.safetensors")), load_file(str(resumed / "bridge.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4]


def test_training_lowers_eval_loss(workspace):
    out = train_bridge(recipe(workspace, steps=30, lr=1e-2, warmup=2) | {"eval_every": 10})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"] - 0.05


def test_bf16_autocast_runs_on_cpu_and_keeps_the_bridge_float32(workspace):
    """``bf16: true`` autocasts on any device (on CUDA "auto" does the same); "auto" on CPU stays float32."""
    plain = train_bridge(recipe(workspace, out="auto"))
    mixed = train_bridge(recipe(workspace, out="bf16") | {"bf16": True})
    a, b = load_file(str(plain / "bridge.safetensors")), load_file(str(mixed / "bridge.safetensors"))
    assert all(t.dtype == torch.float32 for t in b.values())
    # The bf16 forward rounds activations: the bridge moves, but not exactly as in float32 ...
    assert any(not torch.equal(a[k], b[k]) for k in a)

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return torch.tensor([[r["train_loss"], r["eval_loss"]] for r in rows])

    # ... and the losses stay within bf16's rounding of float32's.
    assert torch.allclose(losses(mixed), losses(plain), rtol=0.03)


def test_bf16_setting_per_device(monkeypatch):
    from graftkit.compose import train

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not train.uses_bf16("auto", cpu) and train.uses_bf16(True, cpu) and not train.uses_bf16(False, cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert train.uses_bf16("auto", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert not train.uses_bf16("auto", cuda)
    with pytest.raises(RecipeError, match="bf16"):
        load_recipe(recipe(Path("ws")) | {"bf16": "sometimes"})


def test_labels_cover_completion_only():
    tok = char_tokenizer()
    (ex,) = tokenize([{"prompt": "1+2=", "completion": "3"}], tok, max_length=64, append_eos=True)
    assert ex.input_ids == [30, 39, 31, 41, 32, 2]  # 1 + 2 = 3 <eos>
    assert ex.labels == [-100] * 4 + [32, 2]
    batch = collate([ex, ex.__class__(ex.input_ids[:3], ex.labels[:3])], pad_id=0)
    assert batch["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0, 0]
    assert batch["labels"].tolist()[1] == [-100] * 6


def test_tokenizer_mismatch_refused(workspace):
    other = char_tokenizer()
    other.add_tokens(["zz"])
    other.save_pretrained(workspace / "augment")
    with pytest.raises(GraftError, match="tokenizer"):
        train_bridge(recipe(workspace))


def test_recipe_errors_and_overrides(workspace):
    with pytest.raises(RecipeError, match="optim.learning_rate"):
        load_recipe(recipe(workspace, learning_rate=1.0))
    with pytest.raises(RecipeError, match="augments.0.connections.0.anchor_layer"):
        load_recipe(recipe(workspace) | {"augments": [{"path": "x", "connections": [{"anchor_layer": -1}]}]})
    r = load_recipe(recipe(workspace), ["optim.lr=0.5", "seed=3"])
    assert r.optim.lr == 0.5 and r.seed == 3


def test_lr_schedule():
    assert lr_factor(0, warmup=4, total=20, min_ratio=0.1) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20, 0.1) == pytest.approx(1.0)
    assert lr_factor(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)
    assert lr_factor(12, 4, 20, 0.1) == pytest.approx(0.55)


def test_cli_train_validate_generate(workspace):
    import yaml
    from typer.testing import CliRunner

    from graftkit.compose.cli import app

    (workspace / "recipe.yaml").write_text(yaml.safe_dump(recipe(workspace)))
    runner = CliRunner()
    shown = runner.invoke(app, ["validate", str(workspace / "recipe.yaml"), "optim.steps=2"])
    assert shown.exit_code == 0 and "steps: 2" in shown.output
    trained = runner.invoke(app, ["train", str(workspace / "recipe.yaml"), "optim.steps=2"])
    assert trained.exit_code == 0, trained.output
    assert json.loads((workspace / "out" / "bridge.json").read_text())["training"]["step"] == 2
    args = ["generate", str(workspace / "out"), "-p", "1+2=", "-p", "12+3=", "--max-new-tokens", "3"]
    out = runner.invoke(app, [*args, "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert "1+2=" in out.output and "\n12+3=" in out.output  # each prompt followed by its continuation
