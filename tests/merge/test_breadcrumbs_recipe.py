"""Breadcrumbs as mergekit configs write it: ``gamma`` per model, under ``models[].parameters``."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tests.merge import reference as ref

import graftkit
from graftkit.merge.recipe import parse_recipe
from graftkit.merge.validate import resolve_recipe


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
def test_per_model_gamma_is_accepted_and_used(llama_family, tmp_path, method):
    base, experts = llama_family
    gammas, densities = (0.05, 0.3), (0.5, 0.6)
    recipe = {
        "merge_method": method,
        "base_model": str(base),
        "models": [
            {"model": str(e), "parameters": {"weight": 1.0, "density": d, "gamma": g}}
            for e, d, g in zip(experts[:2], densities, gammas, strict=True)
        ],
    }
    resolved = resolve_recipe(parse_recipe(recipe))
    assert [p["gamma"] for p in resolved.expert_params] == list(gammas)
    out = graftkit.merge(recipe, tmp_path / "out", progress=False)
    b = load_file(base / "model.safetensors")
    xs = [load_file(e / "model.safetensors") for e in experts[:2]]
    got = load_file(out / "model.safetensors")
    for name in ("model.layers.1.mlp.up_proj.weight", "model.norm.weight", "model.embed_tokens.weight"):
        ds = [ref.breadcrumbs(x[name] - b[name], d, g) for x, d, g in zip(xs, densities, gammas, strict=True)]
        want = b[name] + (ref.elect_and_mean(ds, [1.0, 1.0]) if method == "breadcrumbs_ties" else sum(ds))
        torch.testing.assert_close(got[name], want)
        swapped = [
            ref.breadcrumbs(x[name] - b[name], d, g) for x, d, g in zip(xs, densities, gammas[::-1], strict=True)
        ]
        assert not torch.equal(sum(swapped), sum(ds))  # each model's own gamma matters


def test_global_gamma_still_applies_to_every_model():
    recipe = {
        "merge_method": "breadcrumbs",
        "base_model": "b",
        "models": [{"model": "x"}, {"model": "y", "parameters": {"gamma": 0.2}}],
        "parameters": {"gamma": 0.05},
    }
    resolved = resolve_recipe(parse_recipe(recipe))
    assert [p["gamma"] for p in resolved.expert_params] == [0.05, 0.2]


def test_graft_validate_accepts_a_mergekit_breadcrumbs_config(llama_family, tmp_path):
    import yaml

    from graftkit.merge.report import validate_recipe

    base, experts = llama_family
    recipe = {
        "merge_method": "breadcrumbs_ties",
        "base_model": str(base),
        "models": [
            {"model": str(e), "parameters": {"weight": 0.5, "density": 0.9, "gamma": g}}
            for e, g in zip(experts, (0.01, 0.05, 0.1), strict=True)
        ],
        "parameters": {"normalize": True, "int8_mask": True},
        "dtype": "bfloat16",
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert validate_recipe(path).startswith("recipe OK: breadcrumbs_ties of 3 model(s)")
