"""The CALM key-value study end to end on tiny settings, and the invariants its data and baselines keep."""

import json
import re
from pathlib import Path

import pytest

from graftkit.study.calm_kv import (
    EVAL_SETS,
    CalmKVSettings,
    composition_rows,
    keys_in,
    load_settings,
    run_study,
    study_tasks,
)
from graftkit.study.calm_kv_report import ABLATIONS, ablation_rows, render, table1_rows
from graftkit.study.engine import LocalBackend, UnitStore
from graftkit.zoo.tasks import KVTable


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    """The quick study run twice: into the default store (under ``$GRAFTKIT_CACHE``), then again into an
    explicit ``UnitStore`` at that root with every unit function refused, so the rerun only evaluates."""
    import graftkit.study.engine.units as units_module

    root = tmp_path_factory.mktemp("calm_kv_cache")

    def refuse(fn):
        raise AssertionError(f"unit {fn} ran again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAFTKIT_CACHE", str(root))
        first = run_study(CalmKVSettings.quick())
        mp.setattr(units_module, "resolve", refuse)
        again = run_study(CalmKVSettings.quick(), backend=LocalBackend(), store=UnitStore(root))
    return first, again, root


def test_quick_study_produces_every_row_and_dataset(quick_result):
    result, _, _ = quick_result
    for row in ("m_A", "m_B", *ABLATIONS):
        assert set(result["scores"][row]) == set(EVAL_SETS)
        assert all(0.0 <= v <= 100.0 for v in result["scores"][row].values())
    assert len(table1_rows(result)) == 5
    assert [r[0] for r in ablation_rows(result)] == list(ABLATIONS)
    assert {"CALM, random m_A", "CALM, text-only m_A", "CALM, encoder mode", "LoRA on m_B"} <= set(result["scores"])
    render(result)  # renders without error
    json.dumps(result)  # the raw result is JSON-able


def test_rerun_reuses_the_cache(quick_result):
    first, again, root = quick_result
    assert again["scores"] == first["scores"]
    assert again["paths"] == first["paths"]
    assert all(str(root) in p for p in first["paths"].values())  # GRAFTKIT_CACHE was honoured


def test_lora_baseline_matches_the_bridge_size(quick_result):
    params = quick_result[0]["params"]
    assert abs(params["lora_trainable"] - params["bridge"]) <= 0.25 * params["bridge"]


def test_composition_data_uses_only_the_20_percent_keys():
    settings = CalmKVSettings.quick()
    table = KVTable(settings.kv())
    rows = composition_rows(settings)
    assert 0 < len(rows) <= settings.n_composition
    used = {k for r in rows for k in keys_in(r["prompt"])}
    assert used and used <= set(table.train_keys)
    assert not used & set(table.other_keys)
    # and the held-out evaluation set uses only the other 80%
    held_out = study_tasks(settings)["kv_arithmetic_k80"].examples("test", 20)
    assert {k for e in held_out for k in keys_in(e.prompt)} <= set(table.other_keys)


def test_composition_data_is_disjoint_from_the_test_prompts():
    settings = CalmKVSettings.quick()
    train = {r["prompt"] for r in composition_rows(settings)}
    test = study_tasks(settings)["kv_arithmetic"].examples("test", 50)
    assert not train & {e.prompt for e in test}


def test_overrides_parse_into_the_settings():
    settings = load_settings(quick=True, overrides=["bridge.steps=7", "n_eval=3", "anchor_preset=s"])
    assert (settings.bridge.steps, settings.n_eval, settings.anchor_preset) == (7, 3, "s")
    with pytest.raises(Exception, match="nope"):
        load_settings(overrides=["nope=1"])


def test_bridge_data_file_is_the_composition_rows(quick_result):
    result = quick_result[0]
    from pathlib import Path

    stored = [json.loads(line) for line in (Path(result["paths"]["CALM"]) / "composition.jsonl").open()]
    assert stored == composition_rows(CalmKVSettings.quick())


def test_control_bridge_trains_on_substitution_over_the_20_percent_keys(quick_result):
    result, _, _ = quick_result
    folder = Path(result["paths"]["CALM, trained on KV-Substitution"])
    assert folder != Path(result["paths"]["CALM"])
    stored = [json.loads(line) for line in (folder / "composition.jsonl").open()]
    settings = CalmKVSettings.quick()
    assert stored == composition_rows(settings, "kv_substitution_k20") != composition_rows(settings)
    table = KVTable(settings.kv())
    for row in stored:  # the answer is the expression with each key replaced by its value
        assert set(keys_in(row["prompt"])) <= set(table.train_keys)
        expression = row["prompt"].split("\n")[1]
        assert row["completion"] == re.sub("[a-z]+", lambda m: str(table.values[m.group()]), expression)


def test_units_land_in_the_store_and_a_rerun_calls_no_unit_function(quick_result):
    first, again, root = quick_result  # ``again`` ran with every unit function refused
    store = UnitStore(root)
    folders = sorted(p.name for p in store.dir.iterdir() if not p.name.endswith(".lock"))
    assert not [f for f in folders if f.endswith(".partial")]
    prefixes = sorted(f.rsplit("-", 1)[0] for f in folders)  # 4 models, 4 bridges, LoRA: one unit each
    assert prefixes == ["bridge"] * 4 + ["lora", "random_model", "task_model", "task_model", "text_model"]
    for path in first["paths"].values():
        unit = Path(path).parent
        assert unit.parent == store.dir and (unit / "result.json").is_file()
    stages = {k: v for k, v in first["seconds"].items() if k != "evaluation"}
    assert stages == {k: again["seconds"][k] for k in stages}  # the times recorded when the units ran
    assert all(v > 0 for k, v in stages.items() if k != "m_A random")


def test_store_root_is_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFTKIT_CACHE", str(tmp_path))
    assert UnitStore().root == tmp_path


def test_cli_prints_the_tables_and_writes_json(quick_result, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from graftkit.study.cli import app

    monkeypatch.setenv("GRAFTKIT_CACHE", str(quick_result[2]))  # the fixture's store: every stage is a hit
    monkeypatch.setenv("COLUMNS", "160")  # rich wraps the variant names of the ablation table at 80
    out = tmp_path / "r.json"
    run = CliRunner().invoke(app, ["calm-kv", "--quick", "--json", str(out), "n_eval=6"])
    assert run.exit_code == 0, run.output
    assert "KV-Substitution" in run.output and "LoRA on m_B" in run.output
    assert json.loads(out.read_text())["scores"] == quick_result[0]["scores"]


def test_anchor_can_start_from_a_pretrained_base(tmp_path):
    from graftkit.study.calm_kv import build_models
    from graftkit.zoo.cache import weights_hash

    settings = load_settings(quick=True, overrides=["anchor_pretrain={steps: 2, batch_size: 2, seq_len: 16}"])
    lines = []
    paths = build_models(settings, LocalBackend(), UnitStore(tmp_path), lines.append, only=["m_B"])
    assert set(paths) == {"m_B"}
    assert lines[0].startswith("m_B base: built") and lines[1].startswith("m_B: built")
    info = json.loads((paths["m_B"] / "training.json").read_text())
    assert info["task"] == "numeric_arithmetic"
    inputs = json.loads((paths["m_B"].parent / "result.json").read_text())["unit"]["inputs"]
    assert inputs["base"]["weights"] == weights_hash(Path(inputs["base"]["path"]))  # the parent, by hash
