"""The study's merge-and-score helpers: normalisation math, merging, plotting."""

import pytest

from graftkit.study.merge_eval import MergeSetting, merge_all, summarise
from graftkit.study.plots import plot_methods

SCORES = {
    "base": {"a": 0.0, "b": 0.1, "out1": 0.2, "out2": 0.0},
    "expert:a": {"a": 0.8, "b": 0.0, "out1": 0.1, "out2": 0.0},
    "expert:b": {"a": 0.0, "b": 0.5, "out1": 0.0, "out2": 0.0},
    "merged": {"a": 0.4, "b": 0.5, "out1": 0.3, "out2": 0.1},
}


def test_summary_normalises_held_in_by_expert_and_held_out_by_base():
    rows = {r.label: r for r in summarise(SCORES, {"a": "expert:a", "b": "expert:b"}, "base", ["out1", "out2"])}
    merged = rows["merged"]
    assert merged.held_in == pytest.approx(0.45)
    assert merged.held_out == pytest.approx(0.2)
    assert merged.held_in_normalised == pytest.approx((0.4 / 0.8 + 0.5 / 0.5) / 2)
    # out2: the base scores 0, so that ratio is undefined and left out (not infinite)
    assert merged.held_out_normalised == pytest.approx(0.3 / 0.2)
    assert rows["expert:a"].held_in_normalised == pytest.approx((1.0 + 0.0) / 2)


def test_merge_setting_builds_a_valid_recipe_and_merges(tmp_path, llama_family):
    base, experts = llama_family
    settings = [MergeSetting("avg", "linear"), MergeSetting("t", "ties", {"lambda": 0.5}, {"density": 0.5})]
    out = merge_all(base, experts, settings, tmp_path)
    assert set(out) == {"avg", "t"}
    assert (out["t"] / "model.safetensors").exists()
    assert "density: 0.5" in (out["t"] / "graft_recipe.yaml").read_text()


def test_plot_writes_a_png(tmp_path):
    rows = summarise(SCORES, {"a": "expert:a", "b": "expert:b"}, "base", ["out1"])
    path = plot_methods(rows, tmp_path / "p.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
