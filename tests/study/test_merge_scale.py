"""The merge-scale study: normalisation arithmetic, hyperparameter choice, a tiny grid end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graftkit.errors import RecipeError
from graftkit.study.engine import LocalBackend, UnitStore
from graftkit.study.merge_scale import candidates, merged_normalised, recipe_of, run_study
from graftkit.study.merge_scale_report import combine_results, summarise, tidy_rows, write_outputs
from graftkit.study.merge_scale_settings import load_study

REFS = {
    "test": {
        "base": {"a": 0.1, "b": 0.2, "x": 0.5, "y": 0.0},
        "multitask": {"a": 0.8, "b": 0.3, "x": 0.6, "y": 0.1},
        "experts": {"a": 0.8, "b": 0.4},
    }
}


def _merge(method, k, seed, a, b, x, y):
    scores = {"a": a, "b": b, "x": x, "y": y}
    return {"method": method, "n_experts": k, "seed": seed, "experts": ["a", "b"], "hyper": {"lambda": 1.0}} | {
        "scores": scores,
        "correct": {t: int(v * 10) for t, v in scores.items()},
    }


def _result(merges):
    spec = {"name": "b0", "kind": "instruct", "size": "s", "held_in": ["a", "b"], "held_out": ["x", "y"]}
    study = {"name": "t", "methods": ["ties"], "n_experts": [2], "seeds": [0, 1], "n_test": 10, "n_validation": 5}
    return {"study": {**study, "merge_seed": 0}, "bases": [{"spec": spec, "references": REFS, "merges": merges}]}


def test_normalisation_divides_by_expert_held_in_and_by_base_held_out():
    got = merged_normalised(_merge("ties", 2, 0, 0.4, 0.4, 0.25, 0.3), REFS, ["x", "y"])
    assert got["held_in_normalised"] == pytest.approx((0.4 / 0.8 + 0.4 / 0.4) / 2)  # 0.75
    assert got["held_out_normalised"] == pytest.approx(0.25 / 0.5)  # y: base scores 0, skipped
    assert got["skipped"] == 1


def test_summary_averages_seeds_with_an_interval_and_adds_the_multitask_baseline():
    result = _result([_merge("ties", 2, 0, 0.4, 0.4, 0.25, 0.0), _merge("ties", 2, 1, 0.8, 0.2, 0.5, 0.0)])
    ties, multitask = summarise(result)
    # seed 0: (0.5 + 1.0) / 2 = 0.75; seed 1: (1.0 + 0.5) / 2 = 0.75
    assert ties["held_in_normalised"] == pytest.approx(0.75)
    assert ties["held_in_normalised_ci"] == pytest.approx([0.75, 0.75])
    # held-out: 0.5 and 1.0 → mean 0.75, t(1) = 12.71, s = 0.3536, half = 12.71 * 0.3536 / √2 = 3.178
    assert ties["held_out_normalised"] == pytest.approx(0.75)
    assert ties["held_out_normalised_ci"][1] - 0.75 == pytest.approx(12.71 * 0.5 / 2**0.5 / 2**0.5, rel=1e-3)
    assert multitask["method"] == "multitask"
    assert multitask["held_in_normalised"] == pytest.approx((0.8 / 0.8 + 0.3 / 0.4) / 2)
    assert multitask["held_out_normalised"] == pytest.approx(0.6 / 0.5)


def test_combined_results_report_every_base_and_refuse_other_grids():
    one = _result([_merge("ties", 2, 0, 0.4, 0.4, 0.25, 0.0)])
    two = json.loads(json.dumps(one))
    two["bases"][0]["spec"]["name"] = "b1"
    two["study"]["bases"] = [two["bases"][0]["spec"]]
    combined = combine_results([one, two])
    assert [b["spec"]["name"] for b in combined["bases"]] == ["b0", "b1"]
    assert {(s["base"], s["method"]) for s in summarise(combined)} >= {("b0", "ties"), ("b1", "ties")}
    with pytest.raises(ValueError, match="base names repeat"):
        combine_results([one, one])
    two["study"]["seeds"] = [0]
    with pytest.raises(ValueError, match="differ in seeds"):
        combine_results([one, two])


def test_combined_runs_may_merge_different_methods_and_report_the_best_per_base(tmp_path):
    """A SmolLM2 run with RegMean beside a zoo run without it: both combine, the study lists every
    method once, the report names each base's methods and the best method per (base, experts)."""
    one = _result([_merge("ties", 2, 0, 0.4, 0.4, 0.25, 0.0), _merge("regmean", 2, 0, 0.8, 0.4, 0.5, 0.0)])
    one["study"] |= {"methods": ["ties", "regmean"], "grids": {"ties": {"lambda": [1.0]}, "regmean": {"alpha": [0.9]}}}
    two = _result([_merge("ties", 2, 0, 0.2, 0.2, 0.25, 0.0)])
    two["study"] |= {"grids": {"ties": {"lambda": [1.0]}}}
    two["bases"][0]["spec"]["name"] = "zoo"
    combined = combine_results([one, two])
    assert combined["study"]["methods"] == ["ties", "regmean"]
    assert combined["study"]["methods_per_base"] == {"b0": ["ties", "regmean"], "zoo": ["ties"]}
    report = write_outputs(combined, tmp_path)["md"].read_text()
    assert "- zoo: ties" in report
    best = report.split("## Best method per base and expert count")[1].split("##")[0]
    assert "| b0 | 2 | regmean | 1.00 |" in best and "| zoo | 2 | ties | 0.38 |" in best  # (0.2/0.8 + 0.2/0.4) / 2
    two["study"]["grids"] = {"ties": {"lambda": [0.5]}}
    with pytest.raises(ValueError, match="grids differ for method 'ties'"):
        combine_results([one, two])


def test_tidy_rows_carry_reference_and_normalised_score():
    rows = tidy_rows(_result([_merge("ties", 2, 0, 0.4, 0.4, 0.25, 0.0)]))
    merged = {r["task"]: r for r in rows if r["model"] == "merged"}
    assert merged["a"]["reference"] == 0.8 and merged["a"]["normalised"] == pytest.approx(0.5)
    assert merged["x"]["task_kind"] == "held_out" and merged["x"]["normalised"] == pytest.approx(0.5)
    assert merged["y"]["normalised"] is None
    assert merged["a"]["hyperparameters"] == {"lambda": 1.0} and merged["a"]["seed"] == 0


def test_candidates_and_recipes_split_per_expert_parameters():
    study = load_study(overrides={"grids": {"ties": {"lambda": [0.5, 1.0], "density": [0.2]}}})
    assert candidates(study, "ties") == [{"lambda": 0.5, "density": 0.2}, {"lambda": 1.0, "density": 0.2}]
    assert candidates(study, "average") == [{}]
    recipe = recipe_of("ties", {"lambda": 0.5, "density": 0.2}, seed=3)
    assert recipe == {"merge_method": "ties", "parameters": {"lambda": 0.5}, "per_expert": {"density": 0.2}, "seed": 3}


def test_study_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("n_experts: [2, 9]\n")
    with pytest.raises(RecipeError, match="n_experts"):
        load_study(bad)
    bad.write_text("bases: [{name: x, source: zoo, size: s, held_in: [chat_addition], held_out: [chat_addition]}]\n")
    with pytest.raises(RecipeError, match="both held-in and held-out"):
        load_study(bad)
    bad.write_text("seeds: [1, 2]\n")
    with pytest.raises(RecipeError, match="select_on_seed 0 is not one of seeds"):
        load_study(bad)


# -- a tiny grid end to end ---------------------------------------------------------------------------
def _tiny_study(paths, base, methods=("average", "ties")):
    grids = {"ties": {"lambda": [0.5, 1.0], "density": [0.5]}}
    overrides = {"bases": [base], "methods": list(methods), "n_experts": [2, 3], "seeds": [0, 1], "grids": grids}
    return load_study(overrides={**overrides, "n_test": 3, "n_validation": 2})


def test_tiny_grid_runs_caches_and_reports(tiny_family, tiny_base, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFTKIT_CACHE", str(tmp_path / "cache"))
    study = _tiny_study(tiny_family, tiny_base)
    store = UnitStore(tmp_path / "cache")
    result = run_study(study, backend=LocalBackend(), store=store, log=lambda *_: None)
    merges = result["bases"][0]["merges"]
    assert len(merges) == 2 * 2 * 2  # methods × n_experts × seeds
    assert {m["n_experts"] for m in merges} == {2, 3}
    assert all(set(m["scores"]) == {*m["experts"], "reverse_swap"} for m in merges)
    ties = [m for m in merges if m["method"] == "ties"]
    assert all(m["hyper"]["lambda"] in (0.5, 1.0) for m in ties)
    units = sorted(p.name for p in store.dir.iterdir() if not p.name.endswith(".lock"))
    assert not [u for u in units if u.endswith(".partial")]

    # A rerun calls no unit function: every unit is found in the store.
    import graftkit.study.engine.units as units_module

    def refuse(fn):
        raise AssertionError(f"unit {fn} ran again")

    monkeypatch.setattr(units_module, "resolve", refuse)
    again = run_study(study, backend=LocalBackend(), store=store, log=lambda *_: None)
    assert again["bases"][0]["merges"] == merges

    paths = write_outputs(result, tmp_path / "out", name="tiny")
    summary = json.loads(paths["json"].read_text())["summary"]
    assert {(s["method"], s["n_experts"]) for s in summary} == {("average", 2), ("average", 3), ("ties", 2)} | {
        ("ties", 3),
        ("multitask", 3),
    }
    assert json.loads(paths["json"].read_text())["run_info"]["git_revision"]
    rows = json.loads(paths["rows"].read_text())["rows"]
    assert sum(r["model"] == "merged" for r in rows) == sum(len(m["scores"]) for m in merges)
    assert paths["rows"].with_suffix(".csv").exists()
    assert "Beside the paper" in paths["md"].read_text()


def test_data_aware_methods_get_each_merged_experts_statistics(tiny_family, tiny_base, tmp_path, monkeypatch):
    """RegMean in the grid: one statistics pass per expert, and each merge is given exactly the
    statistics of the experts it merges, in their order (average gets none)."""
    monkeypatch.setenv("GRAFTKIT_CACHE", str(tmp_path / "cache"))
    overrides = {"bases": [tiny_base], "methods": ["average", "regmean"], "n_experts": [2], "seeds": [0, 1]}
    study = load_study(overrides={**overrides, "grids": {"regmean": {"alpha": [0.5]}}, "n_test": 2} | {"stats_n": 4})
    store = UnitStore(tmp_path / "cache")
    result = run_study(study, backend=LocalBackend(), store=store, log=lambda *_: None)
    stats = result["bases"][0]["models"]["stats"]
    assert set(stats) == set(tiny_base["held_in"])
    assert all((Path(folder) / "regmean.safetensors").exists() for folder in stats.values())

    records = [json.loads(p.read_text()) for p in store.dir.glob("merge_evaluate-*/result.json")]
    by_method: dict[str, list[dict]] = {}
    for record in records:
        by_method.setdefault(record["unit"]["inputs"]["recipe"]["merge_method"], []).append(record["unit"]["inputs"])
    subsets = {tuple(m["experts"]) for m in result["bases"][0]["merges"]}
    assert len(by_method["regmean"]) == len(by_method["linear"]) == len(subsets)
    for inputs in by_method["regmean"]:
        families = [next(f for f, p in tiny_base["experts"].items() if p == e["path"]) for e in inputs["experts"]]
        assert inputs["stats"] == [stats[f] for f in families]
    assert all("stats" not in inputs for inputs in by_method["linear"])
