"""Layer stacks: mergekit ``slices:`` configs with ``passthrough``, on tiny Qwen3 models built on the fly.

The expected models follow mergekit's semantics (checked against mergekit 0.1.5, which gives the
same bytes): output layer i is source layer j of its slice's model, renumbered; the embedding
comes from the first slice's model, the final norm and the head from the last slice's; the config
is the first model's with ``num_hidden_layers`` set (graftkit also rebuilds ``layer_types``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.conftest import TINY_FIELDS

import graftkit
from graftkit.errors import CheckpointError, RecipeError
from graftkit.merge.params import layer_index, with_layer
from graftkit.merge.recipe import parse_recipe
from graftkit.merge.report import validate_recipe
from graftkit.merge.validate import resolve_recipe

TYPES_A = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
TYPES_B = ["sliding_attention", "sliding_attention", "full_attention", "full_attention"]


def qwen3(seed: int, layer_types: list[str]):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    changes = dict(num_hidden_layers=4, vocab_size=64, head_dim=8, layer_types=layer_types, sliding_window=8)
    config = Qwen3Config(**{**TINY_FIELDS, **changes}, use_sliding_window=True, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("stack")
    qwen3(0, TYPES_A).save_pretrained(root / "a")
    qwen3(1, TYPES_B).save_pretrained(root / "b")
    return root / "a", root / "b"


def write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def stack_recipe(a: Path, b: Path) -> dict:
    """A frankenmerge as mergekit users write it: 3 + 3 overlapping layers, b's o_proj zeroed."""
    return {
        "slices": [
            {"sources": [{"model": str(a), "layer_range": [0, 3]}]},
            {
                "sources": [
                    {
                        "model": str(b),
                        "layer_range": [1, 4],
                        "parameters": {"scale": [{"filter": "o_proj", "value": 0.0}, {"value": 1.0}]},
                    }
                ]
            },
        ],
        "merge_method": "passthrough",
        "dtype": "float32",
    }


def test_mergekit_passthrough_config_stacks_layers(models, tmp_path):
    from transformers import AutoModelForCausalLM

    a, b = models
    out = graftkit.merge(str(write(tmp_path, stack_recipe(a, b))), tmp_path / "out", progress=False)
    sa, sb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    plan = [(sa, 0), (sa, 1), (sa, 2), (sb, 1), (sb, 2), (sb, 3)]  # output layer i ← (model, layer j)
    want = {n: sa[n] for n in sa if "embed_tokens" in n}
    want |= {n: sb[n] for n in sb if layer_index(n) is None and "embed_tokens" not in n}  # norm, lm_head
    for i, (state, j) in enumerate(plan):
        for name in (n for n in state if layer_index(n) == j):
            scale = 0.0 if state is sb and "o_proj" in name else 1.0
            want[with_layer(name, i)] = state[name] * scale
    got = load_file(out / "model.safetensors")
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    assert config["layer_types"] == TYPES_A[:3] + TYPES_B[1:]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.layer_types == TYPES_A[:3] + TYPES_B[1:]
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, 64) and torch.isfinite(logits).all()
    written = yaml.safe_load((out / "graft_recipe.yaml").read_text())
    assert "models" not in written and resolve_recipe(parse_recipe(written)).stack is not None


def test_validate_prints_the_layer_plan(models, tmp_path):
    a, b = models
    text = validate_recipe(write(tmp_path, stack_recipe(a, b)))
    assert "layer stack: 6 output layers from 2 slices" in text
    assert f"layer 0 ← {a} layer 0" in text and f"layer 3 ← {b} layer 1" in text and f"layer 5 ← {b} layer 3" in text
    assert f"embeddings from {a} (first slice)" in text and f"head) from {b} (last slice)" in text


@pytest.mark.parametrize(("layer_range", "why"), [([2, 2], "is empty"), ([3, 1], "is inverted"), ([-1, 2], "below 0")])
def test_empty_or_inverted_range_names_the_slice(models, layer_range, why):
    a, b = models
    recipe = stack_recipe(a, b)
    recipe["slices"][1]["sources"][0]["layer_range"] = layer_range
    with pytest.raises(RecipeError, match=rf"`slices\.1\.sources\.0\.layer_range`: .* {why}: .*end is exclusive"):
        parse_recipe(recipe)


def test_range_past_the_models_layers_is_refused_before_reading(models, tmp_path):
    a, b = models
    recipe = stack_recipe(a, b)
    recipe["slices"][1]["sources"][0]["layer_range"] = [2, 6]
    with pytest.raises(CheckpointError, match=r"slices\[1\]\.sources\[0\]\.layer_range` \[2, 6\]: .* has 4 layers"):
        validate_recipe(write(tmp_path, recipe))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"merge_method": "linear"}, "with `passthrough` only"),
        ({"base_model": "x"}, "uses no base"),
        ({"tokenizer": {"source": "union"}}, "not supported with `slices:`"),
        ({"parameters": {"scale": [0.5, 1.0]}}, "per-layer lists are not supported"),
    ],
)
def test_stack_recipe_errors(models, change, needle):
    a, b = models
    with pytest.raises(RecipeError, match=needle):
        resolve_recipe(parse_recipe({**stack_recipe(a, b), **change}))


def test_a_slice_with_two_sources_is_refused(models):
    a, b = models
    recipe = stack_recipe(a, b)
    recipe["slices"][0]["sources"].append({"model": str(b), "layer_range": [0, 3]})
    with pytest.raises(RecipeError, match=r"`slices\[0\]\.sources`: a passthrough slice takes one source"):
        resolve_recipe(parse_recipe(recipe))


def test_models_and_slices_together_are_refused(models):
    a, b = models
    with pytest.raises(RecipeError, match="either `models:`"):
        parse_recipe({**stack_recipe(a, b), "models": [{"model": str(a)}]})


def test_passthrough_of_one_whole_model_copies_it(models, tmp_path):
    a, _ = models
    recipe = {"merge_method": "passthrough", "models": [{"model": str(a), "parameters": {"scale": 2.0}}]}
    out = graftkit.merge(recipe, tmp_path / "out", progress=False)
    sa, got = load_file(a / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(got[n], sa[n] * 2.0) for n in sa)


def test_interrupted_stack_resumes(models, tmp_path, monkeypatch, caplog):
    """A stack killed half way (its partial folder left behind) resumes to the same bytes."""
    import graftkit.io.output as output
    import graftkit.merge.executor as executor

    a, b = models
    recipe = write(tmp_path, stack_recipe(a, b))
    clean = graftkit.merge(str(recipe), tmp_path / "clean", progress=False)
    writes = {"n": 0}
    real_write = executor._write

    def dying_write(*args):
        writes["n"] += 1
        if writes["n"] > 20:
            raise KeyboardInterrupt  # stands for kill -9: see the _remove patch below
        real_write(*args)

    with monkeypatch.context() as patch:
        patch.setattr(executor, "_write", dying_write)
        patch.setattr(output, "_remove", lambda path: None)  # a killed process removes nothing
        with pytest.raises(KeyboardInterrupt):
            graftkit.merge(str(recipe), tmp_path / "out", progress=False, max_shard_size="20KB")
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.INFO, logger="graftkit"):
        out = graftkit.merge(str(recipe), tmp_path / "out", progress=False, max_shard_size="20KB", resume=True)
    assert "resuming: 20 of" in caplog.text
    got, want = {}, load_file(clean / "model.safetensors")
    for shard in out.glob("*.safetensors"):
        got |= load_file(shard)
    assert set(got) == set(want) and all(torch.equal(got[n], want[n]) for n in want)
