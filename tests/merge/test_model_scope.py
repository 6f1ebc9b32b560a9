"""`trim_scope: model`: TIES' trim ranked over each expert's whole model, as in the paper."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tests.merge import reference as ref

import graftkit
from graftkit.errors import RecipeError
from graftkit.methods import METHODS


def _load(folder):
    return {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}


def test_streamed_model_scope_ties_matches_the_reference(llama_family, tmp_path):
    base, experts = llama_family
    recipe = {
        "merge_method": "ties",
        "base_model": str(base),
        "parameters": {"trim_scope": "model", "lambda": 0.9},
        "models": [
            {"model": str(e), "parameters": {"density": d, "weight": w}}
            for e, d, w in zip(experts, (0.3, 0.1, 0.5), (1.0, 0.5, 2.0), strict=True)
        ],
    }
    merged = _load(graftkit.merge(recipe, tmp_path / "out", progress=False))
    expected = ref.ties_model_scope(_load(base), [_load(e) for e in experts], [1.0, 0.5, 2.0], [0.3, 0.1, 0.5], lam=0.9)
    assert merged.keys() == expected.keys()
    for name, want in expected.items():
        torch.testing.assert_close(merged[name], want, rtol=0, atol=1e-6, msg=name)
    per_tensor = _load(graftkit.merge({**recipe, "parameters": {"lambda": 0.9}}, tmp_path / "tensor", progress=False))
    assert any(not torch.equal(per_tensor[n], merged[n]) for n in merged)  # the scope changes the result


def test_exactly_k_entries_survive_with_ties_at_the_cutoff_kept_in_name_order():
    base = {"a": torch.zeros(4), "b": torch.zeros(4)}
    expert = {"a": torch.tensor([3.0, 1.0, 1.0, -1.0]), "b": torch.tensor([1.0, -1.0, 2.0, 0.5])}
    # density 0.5 of 8 entries: k = 4 → 3 and 2, then two of the five entries tied at |d| = 1.
    merged = graftkit.merge_state_dicts("ties", base, [expert], density=0.5, trim_scope="model")
    assert merged["a"].tolist() == [3.0, 1.0, 1.0, 0.0]
    assert merged["b"].tolist() == [0.0, 0.0, 2.0, 0.0]
    per_tensor = graftkit.merge_state_dicts("ties", base, [expert], density=0.5)
    assert per_tensor["b"].tolist() == [1.0, 0.0, 2.0, 0.0]  # per tensor, b keeps its own top 2


def test_density_one_keeps_everything():
    base = {"w": torch.zeros(3, 3)}
    expert = {"w": torch.randn(3, 3, generator=torch.Generator().manual_seed(0))}
    merged = graftkit.merge_state_dicts("ties", base, [expert], density=1.0, trim_scope="model")
    assert torch.equal(merged["w"], expert["w"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"dare": {"density": 0.5}}, "`dare`: cannot be combined"),
        ({"models_density": [0.1, 0.2]}, "density must be a single number"),
    ],
)
def test_recipes_that_cannot_rank_over_the_model_are_refused(llama_family, tmp_path, extra, message):
    base, experts = llama_family
    density = extra.pop("models_density", 0.3)
    recipe = {
        "merge_method": "ties",
        "base_model": str(base),
        "parameters": {"trim_scope": "model"},
        "models": [{"model": str(e), "parameters": {"density": density}} for e in experts],
        **extra,
    }
    with pytest.raises(RecipeError, match=message):
        graftkit.merge(recipe, tmp_path / "out", progress=False)


def test_the_method_alone_asks_for_the_model_wide_cutoffs():
    with pytest.raises(ValueError, match="needs the per-expert `cutoff`"):
        METHODS.get("ties").fn([torch.ones(2)], base=torch.zeros(2), weights=[1.0], trim_scope="model")


def test_progress_sees_the_two_ranking_reads_then_the_merge(llama_family, tmp_path, monkeypatch):
    import contextlib

    import graftkit.merge.progress as progress

    seen: list[str] = []

    @contextlib.contextmanager
    def spy(plan, *, enabled=True):
        ranked = progress.ranking_reads(plan.jobs, plan.resolved.global_params.get("trim_scope"))
        assert ranked and {j.name for j in ranked} <= {j.name for j in plan.jobs}
        yield lambda job: seen.append(job.name)

    monkeypatch.setattr(progress, "merge_progress", spy)
    base, experts = llama_family
    recipe = {
        "merge_method": "ties",
        "base_model": str(base),
        "parameters": {"trim_scope": "model", "density": 0.3},
        "models": [{"model": str(e)} for e in experts],
    }
    graftkit.merge(recipe, tmp_path / "out", progress=False)
    names = set(load_file(tmp_path / "out" / "model.safetensors"))
    assert {seen.count(name) for name in names} == {3}  # two ranking reads, then the merge
