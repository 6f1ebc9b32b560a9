"""Training: presets, batches, schedule, loss goes down, outputs load, a killed run resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from graftkit.zoo import train
from graftkit.zoo.data import IGNORE, draw_examples, encode_examples, text_batch
from graftkit.zoo.presets import PRESETS, new_model
from graftkit.zoo.tasks import Example
from graftkit.zoo.tokenizer import build_tokenizer
from graftkit.zoo.train import TrainConfig, lr_at, train_loop

TINY = TrainConfig(steps=6, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "base"
    train.pretrain("xs", TINY, out, progress=False)
    return out


@pytest.mark.parametrize("name", ["xs", "s", "m", "l"])
def test_preset_param_counts(name, tok):
    with torch.device("meta"):
        model = new_model(name, tok)
    n = sum(p.numel() for p in model.parameters())
    assert 0.8 * PRESETS[name].approx_params < n < 1.25 * PRESETS[name].approx_params


def test_new_model_seeded(tok):
    a, b, c = new_model("xs", tok, seed=1), new_model("xs", tok, seed=1), new_model("xs", tok, seed=2)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_example_labels_cover_answer_and_eos_only(tok):
    batch = encode_examples([Example("add\n1+2\n=", "3"), Example("reverse\nabcd\n=", "dcba")], tok, 64)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids[0, 0] == tok.bos_token_id
    row0 = [int(t) for t in labels[0] if t != IGNORE]
    assert tok.decode(row0[:-1]) == "3" and row0[-1] == tok.eos_token_id
    row1 = [int(t) for t in labels[1] if t != IGNORE]
    assert tok.decode(row1[:-1]) == "dcba"
    assert mask[0].sum() == len("add\n1+2\n=") + 3  # bos + prompt + answer + eos, then padding
    assert (ids[0][mask[0] == 0] == tok.pad_token_id).all()
    short = encode_examples([Example("reverse\nabcdefgh\n=", "hgfedcba")], tok, 12)
    assert short["input_ids"].shape[1] == 12 and (short["labels"][0, -9:] != IGNORE).all()


def test_batches_are_functions_of_seed_and_step(tok):
    assert draw_examples(["addition", "reversal"], 8, 0, 3) == draw_examples(["addition", "reversal"], 8, 0, 3)
    assert draw_examples(["addition"], 8, 0, 3) != draw_examples(["addition"], 8, 0, 4)
    a, b = text_batch(tok, 2, 16, 0, 5), text_batch(tok, 2, 16, 0, 5)
    assert torch.equal(a["input_ids"], b["input_ids"]) and a["input_ids"].shape == (2, 16)


def test_lr_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_training_lowers_loss(tok):
    model = new_model("xs", tok)
    cfg = TrainConfig(steps=25, batch_size=8, seq_len=32, lr=5e-3, warmup_steps=3)
    held = text_batch(tok, 8, 32, seed=99, step=0)

    def loss() -> float:
        with torch.no_grad():
            return model(**held).loss.item()

    before = loss()
    stats = train_loop(model, lambda s: text_batch(tok, 8, 32, 0, s), cfg, progress=False, device="cpu")
    model.eval()
    assert loss() < before - 0.5
    assert stats.final_loss < stats.first_loss and stats.tokens == 25 * 8 * 32 and stats.resumed_from == 0


def test_killed_run_resumes_from_checkpoint(tok, tmp_path):
    cfg = TrainConfig(steps=12, batch_size=4, seq_len=16, lr=3e-3, warmup_steps=2)

    def batch_at(step):
        return text_batch(tok, 4, 16, 0, step)

    straight = new_model("xs", tok)
    train_loop(straight, batch_at, cfg, progress=False, device="cpu")

    def dies_at_8(step):
        if step == 8:
            raise KeyboardInterrupt
        return batch_at(step)

    work = str(tmp_path / "not" / "yet")  # a str, and a folder that does not exist yet
    with pytest.raises(KeyboardInterrupt):
        train_loop(new_model("xs", tok), dies_at_8, cfg, work_dir=work, checkpoint_every=5, progress=False)
    assert (tmp_path / "not" / "yet" / train.CHECKPOINT).exists()
    resumed = new_model("xs", tok)
    stats = train_loop(resumed, batch_at, cfg, work_dir=work, checkpoint_every=5, progress=False)
    assert stats.resumed_from == 5
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_outputs_load_with_auto_classes(base_dir):
    for f in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (base_dir / f).exists(), f
    info = json.loads((base_dir / "training.json").read_text())
    assert info["stage"] == "pretrain" and info["preset"] == "xs" and info["config"]["steps"] == 6
    assert info["params"] == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base_dir).parameters())
    assert AutoTokenizer.from_pretrained(base_dir)("ab")["input_ids"] == [1, 3, 4]


def test_expert_changes_weights_and_records_parent(base_dir, tmp_path):
    out = tmp_path / "expert"
    train.train_expert(base_dir, "reversal", TINY, out, progress=False)
    info = json.loads((out / "training.json").read_text())
    assert info["stage"] == "expert" and info["families"] == ["reversal"] and info["preset"] == "xs"
    assert info["parent"] == str(base_dir)
    base, _ = train.load_model(base_dir)
    expert, _ = train.load_model(out)
    assert not torch.equal(base.lm_head.weight, expert.lm_head.weight)
    with pytest.raises(KeyError, match="reversal"):
        train.train_expert(base_dir, "reversl", TINY, tmp_path / "x", progress=False)


def test_finetune_freezes_named_parameters_and_trains_the_rest(base_dir, tmp_path):
    out = tmp_path / "expert"
    train.finetune(base_dir, ["addition"], TINY, out, freeze=("embed_tokens",), progress=False)
    before = AutoModelForCausalLM.from_pretrained(base_dir)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(before.model.embed_tokens.weight, after.model.embed_tokens.weight)
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)
    assert json.loads((out / "training.json").read_text())["frozen"] == ["model.embed_tokens.weight"]
    with pytest.raises(ValueError, match="matches no parameter"):
        train.finetune(base_dir, ["addition"], TINY, tmp_path / "x", freeze=("no_such",), progress=False)


def test_bf16_autocast_on_cpu_changes_the_run(base_dir, tmp_path):
    model, tok = train.load_model(base_dir)
    batch_at = train._examples_batches(["addition"], tok, TINY)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_loop(model, batch_at, TINY, progress=False, device="cpu", bf16=True)
    bf16_weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(reference)
    fp32 = train_loop(model, batch_at, TINY, progress=False, device="cpu", bf16=False)
    assert all(v.dtype == torch.float32 for v in bf16_weights.values())
    assert stats.final_loss == pytest.approx(fp32.final_loss, rel=0.05)
    assert any(not torch.equal(bf16_weights[k], v) for k, v in model.state_dict().items())


def test_skills_corpus_states_held_in_skills_in_running_text(tok, tmp_path):
    import random

    from graftkit.zoo.tasks.pretrain import pretrain_document
    from graftkit.zoo.tasks.pretrain_skills import skills_document

    docs = [skills_document(random.Random(i)) for i in range(50)]
    text = "\n".join(docs)
    assert " reversed is " in text and " occurs " in text and " doubled is " in text
    assert "\n=" not in text  # never the tasks' format
    # The default corpus is unchanged: text_batch reads pretrain_document's stream as before.
    rng = random.Random("pretrain/0/0")
    first = tok(pretrain_document(rng), add_special_tokens=True)["input_ids"]
    assert text_batch(tok, 1, len(first), 0, 0)["input_ids"][0].tolist() == first
    skills = text_batch(tok, 1, 64, 0, 0, lambda r: skills_document(r))["input_ids"][0].tolist()
    assert skills != text_batch(tok, 1, 64, 0, 0)["input_ids"][0].tolist()
    stats = train.pretrain("xs", TINY, tmp_path / "b", corpus="pretrain_skills", progress=False)
    assert stats.final_loss > 0
    assert json.loads((tmp_path / "b" / "training.json").read_text())["families"] == ["pretrain_skills"]
    with pytest.raises(ValueError, match="corpus"):
        train.pretrain("xs", TINY, tmp_path / "c", corpus="addition", progress=False)
