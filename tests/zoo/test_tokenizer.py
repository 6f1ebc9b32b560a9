"""The character tokenizer: round-trips every task character, saves and loads through AutoTokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from graftkit.zoo.tasks import TASKS, pretrain_texts
from graftkit.zoo.tokenizer import ALPHABET, build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def task_text() -> str:
    parts = [ALPHABET]
    for _, task in TASKS.items():
        if task.kind in ("chat_held_in", "chat_held_out"):  # asked of a BPE LM, not the zoo's alphabet
            continue
        for ex in task.examples("train", 10 if task.kind == "pretrain" else 100):
            parts += [ex.prompt, ex.answer]
    stream = pretrain_texts()
    parts += [next(stream) for _ in range(500)]
    return "".join(parts)


def test_special_ids(tok):
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert len(tok) == 3 + len(ALPHABET) == len(set(ALPHABET)) + 3


def test_every_task_character_in_alphabet():
    assert set(task_text()) <= set(ALPHABET)


def test_round_trip_one_token_per_char(tok):
    text = task_text()
    for c in set(text):
        ids = tok(c)["input_ids"]
        assert ids[0] == tok.bos_token_id and len(ids) == 2, repr(c)
        assert tok.decode(ids, skip_special_tokens=True) == c
    for sample in (ALPHABET, "add\n12+3\n=", "  a  b\n\n", "x\"y'z #_"):
        ids = tok(sample)["input_ids"]
        assert len(ids) == len(sample) + 1
        assert tok.decode(ids, skip_special_tokens=True) == sample


def test_save_and_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sample = "lookup\na=3,k=7;k\n=" + ALPHABET
    assert loaded(sample)["input_ids"] == tok(sample)["input_ids"]
    assert loaded.decode(tok(sample)["input_ids"], skip_special_tokens=True) == sample
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
