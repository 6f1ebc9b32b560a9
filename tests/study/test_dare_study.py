"""The DARE study: settings, the sweep's grid and recipes, its normalisation, a tiny study end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from graftkit.errors import RecipeError
from graftkit.evaluate.delta_histogram import delta_histogram
from graftkit.evaluate.stats import wilson_interval
from graftkit.study.dare import prestep_recipe, run_study, sweep_points, sweep_recipe
from graftkit.study.dare_report import figures, prestep_summary, sweep_summary, write_outputs
from graftkit.study.dare_settings import load_dare_study
from graftkit.study.engine import LocalBackend, UnitStore


def test_histogram_counts_each_entry_in_its_half_decade_and_gives_the_mean(tmp_path):
    save_file({"w": torch.zeros(5), "i": torch.zeros(2, dtype=torch.int64)}, tmp_path / "base.safetensors")
    delta = torch.tensor([0.0, 2e-3, 3e-3, -6e-3, 0.5])
    save_file({"w": delta, "i": torch.ones(2, dtype=torch.int64)}, tmp_path / "expert.safetensors")
    h = delta_histogram(tmp_path / "base.safetensors", tmp_path / "expert.safetensors", edges=(1e-3, 5e-3, 1e-1))
    assert h["numel"] == 5  # the integer tensor is not a weight
    assert h["counts"] == [1, 2, 1, 1]  # below 1e-3 (the zero), [1e-3, 5e-3), [5e-3, 0.1), >= 0.1
    assert h["mean_abs"] == pytest.approx(float(delta.abs().mean()))
    assert h["above"] == {"0.002": pytest.approx(3 / 5), "0.005": pytest.approx(2 / 5)}


def test_sweep_grid_skips_p0_and_gives_magnitude_one_seed():
    study = load_dare_study(
        overrides={"sweep": {"experts": ["chat_addition"], "drop_rates": [0, 0.5, 0.9], "mask_seeds": [0, 1]}}
    )
    experts = {
        "chat_addition": {"family": "chat_addition", "far": False},
        "chat_reversal": {"family": "chat_reversal", "far": False},  # a pre-step-only expert: not swept
        "far": {"family": "chat_addition", "far": True},
    }
    points = sweep_points(study, experts)
    ours = [p for p in points if p["expert"] == "chat_addition"]
    assert len(ours) == 2 * 2 * 2 + 2 * 2  # dare: 2 rates × 2 rescales × 2 seeds; magnitude: one seed
    assert not [p for p in points if p["drop_rate"] == 0 or p["expert"] == "chat_reversal"]
    assert {p["sparsifier"] for p in points if p["expert"] == "far"} == {"dare"}


def test_sweep_and_prestep_recipes():
    assert sweep_recipe("dare", 0.9, True, 3) == {
        "merge_method": "dare_linear",
        "parameters": {"lambda": 1.0, "rescale": "paper"},
        "per_expert": {"density": 0.1},
        "seed": 3,
    }
    assert sweep_recipe("magnitude", 0.3, False, 0)["merge_method"] == "magnitude_prune"
    assert sweep_recipe("magnitude", 0.3, False, 0)["parameters"]["rescale"] == "none"
    study = load_dare_study()
    assert prestep_recipe(study, "ties", True)["dare"] == {"density": 0.1, "rescale": "paper"}
    assert "dare" not in prestep_recipe(study, "ties", False)
    assert prestep_recipe(study, "ties", False)["per_expert"] == {"density": 0.5}


def test_study_file_errors_name_the_field():
    with pytest.raises(RecipeError, match="not held-in tasks"):
        load_dare_study(overrides={"sweep": {"experts": ["addition"]}})
    with pytest.raises(RecipeError, match="drop rates must be in"):
        load_dare_study(overrides={"sweep": {"drop_rates": [1.0]}})
    with pytest.raises(RecipeError, match="not_a_method"):
        load_dare_study(overrides={"prestep": {"methods": ["not_a_method"]}})


def _fake(expert_correct=40, n=50):
    experts = {"a": {"family": "a", "far": False, "accuracy": expert_correct / n, "correct": expert_correct, "n": n}}
    experts["b"] = {"family": "b", "far": False, "accuracy": 0.5, "correct": 25, "n": n}
    sweep = [
        {"expert": "a", "sparsifier": "dare", "drop_rate": 0.9, "rescale": True, "mask_seed": s, "correct": c, "n": n}
        for s, c in ((0, 30), (1, 34))
    ]
    prestep = [{"method": "linear", "dare": True, "drop_rate": 0.9, "scores": {"a": 0.4, "b": 0.5}}]
    prestep[0] |= {"correct": {"a": 20, "b": 25}, "n": n}
    return {"experts": experts, "sweep": sweep, "prestep": prestep}


def test_sweep_summary_pools_mask_seeds_and_divides_by_the_expert():
    rows = sweep_summary(_fake())
    itself, dropped = rows
    assert itself["drop_rate"] == 0.0 and itself["normalised"] == pytest.approx(1.0)
    assert dropped["normalised"] == pytest.approx((64 / 100) / 0.8)
    low, high = wilson_interval(64, 100)
    assert dropped["normalised_ci"] == pytest.approx([low / 0.8, high / 0.8])
    assert dropped["n"] == 100


def test_figures_draw_the_sweep_and_the_histograms(tmp_path):
    result = _fake()
    result["histograms"] = {"a": {"edges": [1e-3, 1e-2], "counts": [1, 2, 1], "numel": 4, "mean_abs": 0.004}}
    result["histograms"]["a"] |= {"dare_applicable": True}
    paths = figures(result, sweep_summary(result), tmp_path, "t")
    assert [p.name for p in paths] == ["t_sweep.png", "t_deltas.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_prestep_summary_averages_the_merged_tasks():
    (row,) = prestep_summary(_fake())
    assert row["held_in_normalised"] == pytest.approx((0.4 / 0.8 + 0.5 / 0.5) / 2)
    lows = [wilson_interval(20, 50)[0] / 0.8, wilson_interval(25, 50)[0] / 0.5]
    assert row["held_in_normalised_ci"][0] == pytest.approx(sum(lows) / 2)


# -- a tiny study end to end --------------------------------------------------------------------------
def _tiny_study(paths, base):
    sweep = {"experts": ["addition"], "drop_rates": [0.0, 0.9], "mask_seeds": [0, 1]}
    prestep = {"experts": ["addition", "reversal"], "methods": ["linear", "fisher", "regmean"], "stats_n": 2}
    far = {"family": "case_swap", "path": str(paths["case_swap"])}
    overrides = {"base": base, "sweep": sweep, "prestep": prestep, "far": far, "n_test": 3}
    return load_dare_study(overrides=overrides)


def test_tiny_study_runs_caches_and_reports(tiny_family, tiny_base, tmp_path, monkeypatch):
    study = _tiny_study(tiny_family, tiny_base)
    store = UnitStore(tmp_path / "cache")
    result = run_study(study, backend=LocalBackend(), store=store, log=lambda *_: None)
    assert set(result["experts"]) == {"addition", "reversal", "case_swap@lr0.002"}
    assert len(result["sweep"]) == 2 * 2 + 2 + 2 * 2  # addition (dare × 2 seeds, magnitude) + far (dare)
    assert [(p["method"], p["dare"]) for p in result["prestep"]][:2] == [("linear", False), ("linear", True)]
    assert all(set(p["scores"]) == {"addition", "reversal"} for p in result["prestep"])
    far = result["histograms"]["case_swap@lr0.002"]
    assert far["mean_abs"] > result["histograms"]["addition"]["mean_abs"]  # perturbed 3x as much
    assert sum(far["counts"]) == far["numel"]

    import graftkit.study.engine.units as units_module

    def refuse(fn):
        raise AssertionError(f"unit {fn} ran again")

    monkeypatch.setattr(units_module, "resolve", refuse)
    assert run_study(study, backend=LocalBackend(), store=store, log=lambda *_: None) == result

    paths = write_outputs(result, tmp_path / "out", name="tiny")
    payload = json.loads(paths["json"].read_text())
    keys = {(s["expert"], s["sparsifier"], s["drop_rate"], s["rescale"]) for s in payload["sweep"]}
    assert ("addition", "magnitude", 0.9, False) in keys and ("addition", "dare", 0.0, True) in keys
    assert len(keys) == 2 * 2 * 2 + 2 * 2  # (p = 0 and 0.9) × rescale × sparsifier, and the far expert's dare
    assert all(set(s) >= {"expert", "sparsifier", "drop_rate", "rescale", "normalised"} for s in payload["sweep"])
    assert len(payload["prestep"]) == 6 and payload["run_info"]["git_revision"]
    assert (tmp_path / "out" / "tiny_deltas.png").stat().st_size > 0  # random tiny experts score 0: no sweep plot
    assert "DARE as a pre-step" in paths["md"].read_text()
