"""The cache skips finished work and resumes killed builds; build_zoo assembles a zoo from it."""

from __future__ import annotations

import json

import pytest
import torch

from graftkit.zoo import build, train
from graftkit.zoo.build import ZooManifest, ZooRecipe, build_zoo
from graftkit.zoo.cache import Cache, cache_root, content_key, weights_hash
from graftkit.zoo.tasks import TASKS
from graftkit.zoo.train import TrainConfig

TINY = TrainConfig(steps=3, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=1)
RECIPE = ZooRecipe(preset="xs", pretrain=TINY, instruct=TINY, expert=TINY, multitask=TINY)


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAFTKIT_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and Cache().dir == tmp_path / "zoo"
    monkeypatch.delenv("GRAFTKIT_CACHE")
    assert cache_root().parts[-2:] == (".cache", "graftkit")


def test_content_key_depends_on_every_input():
    base = {"preset": "xs", "config": TINY, "families": ["a"]}
    key = content_key(base)
    assert content_key(dict(reversed(base.items()))) == key
    assert content_key({**base, "config": TINY.model_copy(update={"lr": 1e-3})}) != key
    assert content_key({**base, "families": ["b"]}) != key
    assert content_key({**base, "preset": "s"}) != key


def test_second_build_does_not_run(tmp_path):
    cache, calls = Cache(tmp_path), []

    def fn(out, work):
        calls.append(out)
        (out / "w.txt").write_text("x")
        (work / "scratch").write_text("y")

    first = cache.build("unit", {"a": 1}, fn)
    second = cache.build("unit", {"a": 1}, fn)
    assert first == second and len(calls) == 1
    assert (first / "w.txt").read_text() == "x" and not (first / "work").exists()
    assert json.loads((first / "entry.json").read_text())["inputs"] == {"a": 1}
    assert cache.build("unit", {"a": 2}, fn) != first and len(calls) == 2


def test_failed_build_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def fails(out, work):
        (out / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.build("unit", {"a": 1}, fails)
    assert cache.get("unit", {"a": 1}) is None
    assert not cache.path("unit", {"a": 1}).exists()


def test_killed_training_build_resumes(tmp_path, monkeypatch):
    cfg = TrainConfig(steps=10, batch_size=4, seq_len=16, lr=3e-3, warmup_steps=2)
    inputs = {"preset": "xs", "config": cfg}

    def fn(out, work):
        train.pretrain("xs", cfg, out, work_dir=work, checkpoint_every=4, progress=False)

    real = train.text_batch

    def dies_at_6(tok, b, t, seed, step, *document):
        if step == 6:
            raise KeyboardInterrupt
        return real(tok, b, t, seed, step, *document)

    monkeypatch.setattr(train, "text_batch", dies_at_6)
    with pytest.raises(KeyboardInterrupt):
        Cache(tmp_path / "a").build("pretrain", inputs, fn)
    monkeypatch.setattr(train, "text_batch", real)
    resumed = Cache(tmp_path / "a").build("pretrain", inputs, fn)
    assert json.loads((resumed / "training.json").read_text())["resumed_from"] == 4
    straight = Cache(tmp_path / "b").build("pretrain", inputs, fn)
    assert json.loads((straight / "training.json").read_text())["resumed_from"] == 0
    a, _ = train.load_model(resumed)
    b, _ = train.load_model(straight)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y)


def test_build_zoo_then_rebuild_is_cached(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    families = ["addition", "reversal"]
    man = build_zoo("xs", families=families, recipe=RECIPE, cache=cache, progress=False)
    assert set(man.bases) == {"pretrained", "instruct"}
    assert set(man.experts["instruct"]) == set(families) and set(man.multitask) == {"pretrained", "instruct"}
    info = json.loads((man.bases["instruct"] / "training.json").read_text())
    assert info["stage"] == "instruct" and info["parent"] == str(man.bases["pretrained"])
    expert = json.loads((man.experts["pretrained"]["reversal"] / "training.json").read_text())
    assert expert["families"] == ["reversal"] and expert["parent"] == str(man.bases["pretrained"])
    multi = json.loads((man.multitask["instruct"] / "training.json").read_text())
    assert multi["families"] == families and multi["parent"] == str(man.bases["instruct"])
    all_paths = [*man.bases.values(), *man.multitask.values()]
    all_paths += [p for e in man.experts.values() for p in e.values()]
    assert len(set(all_paths)) == 8 and all((p / "model.safetensors").exists() for p in all_paths)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached zoo must not train")

    monkeypatch.setattr(train, "train_loop", no_training)
    again = build_zoo("xs", families=families, recipe=RECIPE, cache=cache, progress=False)
    assert again == man
    path = tmp_path / "manifest.json"
    man.save(path)
    assert ZooManifest.load(path) == man


def test_build_zoo_rebuilds_children_of_a_changed_parent(tmp_path):
    cache = Cache(tmp_path)
    man = build_zoo("xs", ("pretrained",), ["addition"], multitask=False, recipe=RECIPE, cache=cache)
    longer = RECIPE.model_copy(update={"pretrain": TINY.model_copy(update={"steps": 4})})
    man2 = build_zoo("xs", ("pretrained",), ["addition"], multitask=False, recipe=longer, cache=cache)
    assert man2.bases["pretrained"] != man.bases["pretrained"]
    assert weights_hash(man2.bases["pretrained"]) != weights_hash(man.bases["pretrained"])
    assert man2.experts["pretrained"]["addition"] != man.experts["pretrained"]["addition"]
    assert man.multitask == {}


def test_a_revised_task_rebuilds_its_experts_only(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    families = ["addition", "reversal"]
    man = build_zoo("xs", ("pretrained",), families, multitask=False, recipe=RECIPE, cache=cache)
    monkeypatch.setattr(TASKS.get("reversal"), "revision", 7)
    man2 = build_zoo("xs", ("pretrained",), families, multitask=False, recipe=RECIPE, cache=cache)
    assert man2.bases == man.bases
    assert man2.experts["pretrained"]["addition"] == man.experts["pretrained"]["addition"]
    assert man2.experts["pretrained"]["reversal"] != man.experts["pretrained"]["reversal"]


def test_build_zoo_validates_before_training(tmp_path):
    with pytest.raises(ValueError, match="held_in"):
        build_zoo("xs", families=["subtraction"], recipe=RECIPE, cache=Cache(tmp_path))
    with pytest.raises(KeyError, match="demo"):
        build_zoo("tiny", cache=Cache(tmp_path))
    with pytest.raises(KeyError, match="instruct"):
        build_zoo("xs", bases=("instruction",), recipe=RECIPE, cache=Cache(tmp_path))  # type: ignore[arg-type]
    assert not (tmp_path / "zoo").exists()
    assert set(build.RECIPES) >= {"demo", "xs", "s", "m", "l", "xl", "xxl"}


def test_expert_overrides_change_one_family_only(tmp_path):
    recipe = RECIPE.model_copy(update={"expert_overrides": {"reversal": {"steps": 5, "lr": 1e-3}}})
    assert recipe.expert_config("addition") == TINY
    assert recipe.expert_config("reversal") == TINY.model_copy(update={"steps": 5, "lr": 1e-3, "warmup_steps": 0})
    man = build_zoo(
        "xs", ("pretrained",), ["addition", "reversal"], multitask=False, recipe=recipe, cache=Cache(tmp_path)
    )
    steps = {
        f: json.loads((p / "training.json").read_text())["config"]["steps"]
        for f, p in man.experts["pretrained"].items()
    }
    assert steps == {"addition": 3, "reversal": 5}


def test_auxiliary_families_join_their_expert_and_the_multitask_only(tmp_path):
    recipe = RECIPE.model_copy(update={"auxiliary": {"reversal": ("copy_span",)}})
    assert recipe.expert_families("addition") == ["addition"]
    assert recipe.expert_families("reversal") == ["reversal", "copy_span"]
    man = build_zoo("xs", ("pretrained",), ["addition", "reversal"], recipe=recipe, cache=Cache(tmp_path))
    trained_on = {
        f: json.loads((p / "training.json").read_text())["families"] for f, p in man.experts["pretrained"].items()
    }
    assert trained_on == {"addition": ["addition"], "reversal": ["reversal", "copy_span"]}
    multitask = json.loads((man.multitask["pretrained"] / "training.json").read_text())["families"]
    assert multitask == ["addition", "reversal", "copy_span"]
    # A family without auxiliaries keeps the cache entry it had before auxiliaries existed.
    plain = build_zoo("xs", ("pretrained",), ["addition"], multitask=False, recipe=RECIPE, cache=Cache(tmp_path))
    assert plain.experts["pretrained"]["addition"] == man.experts["pretrained"]["addition"]


def test_auxiliary_must_name_auxiliary_tasks():
    with pytest.raises(ValueError, match=r"auxiliary\['reversal'\]: 'addition' is a held_in task; use one of"):
        RECIPE.model_copy(update={}).model_validate({**RECIPE.model_dump(), "auxiliary": {"reversal": ["addition"]}})
    assert build.RECIPES["s"].expert_families("key_lookup") == ["key_lookup", "copy_span"]


def test_zoo_report_scores_every_model_and_records_training_time(tmp_path):
    from rich.console import Console

    from graftkit.study import zoo_report

    man = build_zoo("xs", ("pretrained",), ["addition"], recipe=RECIPE, cache=Cache(tmp_path), progress=False)
    report = zoo_report.score_zoo(man, n=4, held_out=["addition_words"])
    labels = {"pretrained", "pretrained/expert:addition", "pretrained/multitask"}
    assert set(report["scores"]) == labels
    assert all(set(by_task) == {"addition", "addition_words"} for by_task in report["scores"].values())
    folders = {"pretrained": man.bases["pretrained"], "pretrained/multitask": man.multitask["pretrained"]}
    folders["pretrained/expert:addition"] = man.experts["pretrained"]["addition"]
    recorded = {label: json.loads((p / "training.json").read_text())["seconds"] for label, p in folders.items()}
    assert report["train_seconds"] == {label: round(s, 1) for label, s in recorded.items()}
    console = Console(width=200, record=True)
    console.print(zoo_report.render(report))
    text = console.export_text()
    assert "train s" in text and "addition_words*" in text
    table = zoo_report.markdown(report).splitlines()
    assert table[0] == "| model | addition | addition_words* | train s |" and len(table) == 2 + len(labels)


def test_graft_zoo_build_prints_the_table_and_writes_json(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from graftkit.cli import app

    monkeypatch.setenv("GRAFTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(build.RECIPES, "xs", RECIPE)
    args = ["zoo", "build", "--size", "xs", "--bases", "pretrained", "--families", "addition", "--no-multitask"]
    result = CliRunner().invoke(app, [*args, "--n", "4", "--json", str(tmp_path / "zoo.json")])
    assert result.exit_code == 0, result.output
    assert "zoo 'xs': exact match" in result.output and "multitask" not in result.output
    report = json.loads((tmp_path / "zoo.json").read_text())
    assert set(report["scores"]) == {"pretrained", "pretrained/expert:addition"}
