"""The Ray backend gives the local backend's results, computed in Ray worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from graftkit.study.engine import LocalBackend, RayBackend, Unit, UnitStore, expand

ray = pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ray_backend():
    """A RayBackend that starts a 2-CPU local Ray whose workers can import ``engine_units``."""
    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), old) if p)  # workers inherit it
    try:
        yield RayBackend(num_cpus=2)
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_ray_matches_local_and_runs_in_workers(ray_backend, tmp_path):
    units = [Unit("engine_units:square_with_pid", point) for point in expand({"x": [3, 5]})]
    local_store, ray_store = UnitStore(tmp_path / "local"), UnitStore(tmp_path / "ray")

    local = LocalBackend().map(units, local_store)
    remote = ray_backend.map(units, ray_store, progress="ray units")
    assert remote == local == [{"x": 3, "square": 9}, {"x": 5, "square": 25}]
    assert ray.is_initialized()

    pids = {int((ray_store.path(unit) / "pid.txt").read_text()) for unit in units}
    assert os.getpid() not in pids
    assert {int((local_store.path(unit) / "pid.txt").read_text()) for unit in units} == {os.getpid()}

    for unit in units:  # a cached unit is not submitted again: its pid file stays as it was
        (ray_store.path(unit) / "pid.txt").write_text("0")
    assert ray_backend.map(units, ray_store) == local
    assert {(ray_store.path(unit) / "pid.txt").read_text() for unit in units} == {"0"}


def test_model_units_on_ray_equal_local(ray_backend, tmp_path):
    """Two real study units (score a tiny model, merge two and score) give the same results on Ray."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from graftkit.study.model_units import evaluate_unit, merge_unit, model_ref
    from graftkit.zoo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    refs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
        LlamaForCausalLM(config).save_pretrained(tmp_path / f"m{seed}")
        tok.save_pretrained(tmp_path / f"m{seed}")
        refs.append(model_ref(tmp_path / f"m{seed}"))
    recipe = {"merge_method": "linear", "seed": 0}
    units = [
        evaluate_unit(refs[0], ["addition", "reversal"], "test", 3, "eval", threads=1),
        merge_unit(refs[0], refs, recipe, ["addition"], "test", 3, "merge", threads=1),
    ]
    local = LocalBackend().map(units, UnitStore(tmp_path / "local"))
    remote = ray_backend.map(units, UnitStore(tmp_path / "ray"))
    assert remote == local
    assert set(local[0]["scores"]) == {"addition", "reversal"} and set(local[1]["scores"]) == {"addition"}
