"""The demo's recipes and its summary (the training and scoring are the study units, tested there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from graftkit.demo import DEMO_SETTINGS, demo_recipes, summarise
from graftkit.merge.recipe import parse_recipe


def test_every_demo_recipe_validates_and_regmean_names_each_experts_statistics(tmp_path):
    experts, stats = [tmp_path / "e0", tmp_path / "e1"], [tmp_path / "s0", tmp_path / "s1"]
    recipes = demo_recipes(tmp_path / "base", experts, stats)
    assert list(recipes) == [label for label, _ in DEMO_SETTINGS]
    assert [m["stats"] for m in recipes["regmean"]["models"]] == [str(s) for s in stats]
    assert all("stats" not in m for label in ("average", "ties") for m in recipes[label]["models"])
    assert recipes["ties"]["models"][0]["parameters"] == {"density": 0.5}
    for recipe in recipes.values():
        parse_recipe(recipe)


def test_summary_normalises_held_in_by_each_expert_and_held_out_by_the_base():
    scores = {
        "base": {"a": 0.2, "b": 0.0, "x": 0.5, "y": 0.4},
        "expert:a": {"a": 0.8, "b": 0.0, "x": 0.4, "y": 0.4},
        "expert:b": {"a": 0.2, "b": 0.5, "x": 0.5, "y": 0.2},
        "regmean": {"a": 0.6, "b": 0.5, "x": 0.5, "y": 0.2},
    }
    (row,) = summarise(scores, ["a", "b"], ["x", "y"])
    assert row["method"] == "regmean" and row["n_experts"] == 2
    assert row["held_in_normalised"] == pytest.approx((0.6 / 0.8 + 0.5 / 0.5) / 2)
    assert row["held_out_normalised"] == pytest.approx((0.5 / 0.5 + 0.2 / 0.4) / 2)
    assert row["held_in_normalised_per_task"] == pytest.approx({"a": 0.75, "b": 1.0})


def test_recipes_refuse_a_missing_statistics_folder_per_expert(tmp_path):
    with pytest.raises(ValueError):
        demo_recipes(Path("base"), [tmp_path / "e0", tmp_path / "e1"], [tmp_path / "s0"])
