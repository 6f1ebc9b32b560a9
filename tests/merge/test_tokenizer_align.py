"""Tokenizer alignment: embedding and head rows matched by token string (``tokenizer: {source: …}``).

Tiny Llamas with 64 embedding rows and word-level tokenizers built on the fly: a 60-token base
(rows 60–63 padding) and experts that add tokens, so rows must be matched by token, not by id.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.conftest import perturbed, tiny_llama_config

import graftkit
from graftkit.errors import CheckpointError
from graftkit.merge.recipe import parse_recipe
from graftkit.merge.report import validate_recipe

ROWS = 64  # embedding rows of every model; the base tokenizer has 60 tokens
WORDS = ["<unk>", "<pad>"] + [f"w{i}" for i in range(2, 60)]
VOCAB = ("model.embed_tokens.weight", "lm_head.weight")


def word_tokenizer(added: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    tok.add_tokens(added, special_tokens=True)
    return tok


def save(model, folder: Path, added: list[str] | None) -> Path:
    model.save_pretrained(folder)
    if added is not None:
        word_tokenizer(added).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """base (60 tokens), e1 (+<a>, <b>), e2 (+<b>, <a>: other ids), e3 (60 tokens); tied or untied."""
    root = tmp_path_factory.mktemp("vocab")
    out = {}
    for tied in (False, True):
        from transformers import LlamaForCausalLM

        torch.manual_seed(0)
        base = LlamaForCausalLM(tiny_llama_config(num_hidden_layers=2, vocab_size=ROWS, tie_word_embeddings=tied))
        tag = "tied" if tied else "untied"
        out[tag] = {
            "base": save(base, root / tag / "base", []),
            "e1": save(perturbed(base, 1), root / tag / "e1", ["<a>", "<b>"]),
            "e2": save(perturbed(base, 2), root / tag / "e2", ["<b>", "<a>"]),
            "e3": save(perturbed(base, 3), root / tag / "e3", []),
        }
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def merge(tmp_path: Path, models: dict[str, Path], experts: list[str], weight: float = 0.5, **fields) -> Path:
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(models["base"]),
        "models": [{"model": str(models[e]), "parameters": {"weight": weight}} for e in experts],
        **fields,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return graftkit.merge(str(path), tmp_path / "out", progress=False)


@pytest.mark.parametrize("tied", ["untied", "tied"])
def test_union_of_60_and_62_tokens(family, tmp_path, tied):
    """Shared tokens' rows are the plain merge; <a>, <b> (absent from the base) take the expert's
    rows (the base takes the mean of the models that have them, so their task vector is 0);
    padding rows 62, 63 are kept and merged by position; the tokenizer loads with AutoTokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = family[tied]
    out = merge(tmp_path, models, ["e1"], tokenizer={"source": "union"})
    b, x, got = weights(models["base"]), weights(models["e1"]), weights(out)
    names = [n for n in VOCAB if n in b]
    assert len(names) == (1 if tied == "tied" else 2)
    for name in names:
        plain = b[name] + 0.5 * (x[name] - b[name])  # (64, 32) merged by position
        assert got[name].shape == (ROWS, 32)
        torch.testing.assert_close(got[name][:60], plain[:60])  # shared tokens
        torch.testing.assert_close(got[name][60:62], x[name][60:62])  # <a>, <b>: only e1 has them
        torch.testing.assert_close(got[name][62:], plain[62:])  # padding kept
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 62 and tok.convert_tokens_to_ids(["<a>", "<b>", "w5"]) == [60, 61, 5]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == ROWS
    assert model(torch.tensor([tok.convert_tokens_to_ids(["w3", "<b>"])])).logits.shape == (1, 2, ROWS)


def test_rows_are_matched_by_token_not_id(family, tmp_path):
    """e2 holds <b> at id 60 and <a> at 61; e3 and the base lack both, so they take the mean of
    e1's and e2's rows for each token (so the merged row is that mean, for any weight)."""
    models = family["untied"]
    out = merge(tmp_path, models, ["e1", "e2", "e3"], weight=0.3, tokenizer_source="union")
    b, e1, e2, e3 = (weights(models[k]) for k in ("base", "e1", "e2", "e3"))
    got = weights(out)
    for name in VOCAB:
        plain = b[name] + 0.3 * sum(e[name] - b[name] for e in (e1, e2, e3))
        torch.testing.assert_close(got[name][:60], plain[:60])
        for row_1, row_2 in ((60, 61), (61, 60)):  # e1's id of the token, e2's id of it
            a1, a2 = e1[name][row_1], e2[name][row_2]
            torch.testing.assert_close(got[name][row_1], (a1 + a2) / 2)


def test_source_base_keeps_the_base_vocabulary(family, tmp_path):
    """The expert's added tokens are dropped; its rows 60, 61 (tokens, not padding) give way to the
    base's padding rows, its padding rows 62, 63 merge by position."""
    models = family["untied"]
    out = merge(tmp_path, models, ["e1"], tokenizer={"source": "base"})
    b, x, got = weights(models["base"]), weights(models["e1"]), weights(out)
    for name in VOCAB:
        plain = b[name] + 0.5 * (x[name] - b[name])
        torch.testing.assert_close(got[name][:60], plain[:60])
        torch.testing.assert_close(got[name][60:62], b[name][60:62])
        torch.testing.assert_close(got[name][62:], plain[62:])
    assert not (out / "tokenizer.json").read_text().count("<a>")


def test_source_model_takes_that_models_tokenizer(family, tmp_path):
    from transformers import AutoTokenizer

    models = family["untied"]
    out = merge(tmp_path, models, ["e1"], tokenizer={"source": str(models["e2"])})
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(["<b>", "<a>"]) == [60, 61]
    b, e1, got = weights(models["base"]), weights(models["e1"]), weights(out)
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(got[name][60], e1[name][61])  # <b>: e1's row 61, the base takes it too
    torch.testing.assert_close(got[name][:60], b[name][:60] + 0.5 * (e1[name][:60] - b[name][:60]))


def test_pad_to_multiple_of_adds_rows(family, tmp_path):
    models = family["untied"]
    out = merge(tmp_path, models, ["e1"], tokenizer={"source": "union", "pad_to_multiple_of": 48})
    assert weights(out)["lm_head.weight"].shape == (96, 32)


def test_validate_prints_the_vocabulary(family, tmp_path):
    models = family["untied"]
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(models["base"]),
        "models": [{"model": str(models["e1"])}],
        "tokenizer": {"source": "union"},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    text = validate_recipe(path)
    assert "union of 2 (62 tokens; 2 not in" in text and "'<a>', '<b>'" in text
    assert "lm_head.weight, model.embed_tokens.weight (64 rows)" in text


def test_vocabulary_mismatch_error_suggests_the_option(tmp_path):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(num_hidden_layers=2, vocab_size=60)).save_pretrained(tmp_path / "a")
    LlamaForCausalLM(tiny_llama_config(num_hidden_layers=2, vocab_size=62)).save_pretrained(tmp_path / "b")
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(tmp_path / "a"),
        "models": [{"model": str(tmp_path / "b")}],
    }
    with pytest.raises(CheckpointError, match=r"tokenizer: \{source: union\}"):
        graftkit.merge(recipe, tmp_path / "out", progress=False)


def test_recipe_fields():
    recipe = parse_recipe({"merge_method": "linear", "models": [{"model": "a"}], "tokenizer_source": "union"})
    assert recipe.tokenizer_options.source == "union"
    assert (
        parse_recipe({"merge_method": "linear", "models": [{"model": "a"}], "tokenizer": {}}).tokenizer_options.source
        == "union"
    )
    from graftkit.errors import RecipeError

    with pytest.raises(RecipeError, match="not both"):
        parse_recipe(
            {"merge_method": "linear", "models": [{"model": "a"}], "tokenizer": {}, "tokenizer_source": "base"}
        )
    with pytest.raises(RecipeError, match="tokens:"):
        parse_recipe({"merge_method": "linear", "models": [{"model": "a"}], "tokenizer": {"tokens": {}}})
