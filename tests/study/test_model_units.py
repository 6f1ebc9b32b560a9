"""Model units: an expert fine-tune and a kept merge land in the unit folder, found by unit_model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from graftkit.study.engine import UnitStore
from graftkit.study.model_units import evaluate_unit, expert_unit, merge_unit, model_ref, unit_model
from graftkit.zoo import train
from graftkit.zoo.cache import weights_hash
from graftkit.zoo.train import TrainConfig

TINY = TrainConfig(steps=4, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("units") / "base"
    train.pretrain("xs", TINY, out, progress=False)
    return model_ref(out)


def test_expert_unit_writes_its_model_into_the_final_unit_folder(base, tmp_path):
    store = UnitStore(tmp_path)
    settings = {"config": TINY.model_dump(), "freeze": ["embed_tokens"], "bf16": False, "stage": "expert"}
    unit = expert_unit(base, ["addition"], settings, "expert:addition")
    result = store.run(unit)
    ref = unit_model(store, unit)
    assert ref["path"].startswith(str(store.path(unit))) and ".partial" not in ref["path"]
    assert weights_hash(ref["path"]) == ref["weights"] == result["weights"]
    expert = AutoModelForCausalLM.from_pretrained(ref["path"])
    parent = AutoModelForCausalLM.from_pretrained(base["path"])
    assert torch.equal(expert.model.embed_tokens.weight, parent.model.embed_tokens.weight)
    assert not torch.equal(expert.lm_head.weight, parent.lm_head.weight)

    # The expert is a valid parent for the next units: a kept merge with the base, then scoring it.
    merge = merge_unit(base, [ref, ref], {"merge_method": "linear", "seed": 0}, ["addition"], "test", 4, "m", keep=True)
    merged = store.run(merge)
    assert set(merged["scores"]) == {"addition"} and merged["n"] == 4
    kept = unit_model(store, merge)
    assert torch.equal(AutoModelForCausalLM.from_pretrained(kept["path"]).lm_head.weight, expert.lm_head.weight)
    scored = store.run(evaluate_unit(kept, ["addition"], "test", 4, "kept"))
    assert scored["scores"] == merged["scores"]


def test_unit_model_refuses_a_unit_that_has_not_run(base, tmp_path):
    unit = expert_unit(base, ["addition"], {"config": TINY.model_dump()}, "x")
    with pytest.raises(ValueError, match="has not run"):
        unit_model(UnitStore(tmp_path), unit)
