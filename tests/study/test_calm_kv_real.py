"""The real-anchor CALM study: its settings, chat data, pre-check, and a tiny run end to end.

SmolLM2 is replaced by a tiny Llama over a tiny byte-level BPE tokenizer (``anchor_path``), so the
whole pipeline (m_B fine-tune, m_A over the anchor's tokenizer, bridges incl. encoder mode, LoRA,
scores over two seeds, pre-check, report) runs in seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tiny_bpe_anchor import run_tiny_study, tiny_bpe_tokenizer

from graftkit.errors import RecipeError
from graftkit.study.calm_kv import load_settings, run_study
from graftkit.study.calm_kv_chat import TASK_SETS, spaced
from graftkit.study.calm_kv_precheck import SETS, patch_examples, patching_losses
from graftkit.study.calm_kv_real_report import PAPER_TABLE1, write_report
from graftkit.study.calm_kv_real_settings import CalmKVRealSettings
from graftkit.study.calm_kv_stages import _rows
from graftkit.study.engine import LocalBackend, UnitStore
from graftkit.zoo.tasks import KVTable

STUDY_FILE = Path(__file__).resolve().parents[2] / "studies" / "calm_kv_real.yaml"
GPU_FILE = STUDY_FILE.with_name("calm_kv_gpu.yaml")


@pytest.fixture(scope="module")
def tiny_run(bpe_anchor, tmp_path_factory):
    """The quick real study on the stand-in anchor, into a fresh store under ``$GRAFTKIT_CACHE``."""
    return run_tiny_study(tmp_path_factory, bpe_anchor, load_settings, run_study)


# -- settings -----------------------------------------------------------------------------------------
def test_the_preset_and_the_study_file_validate():
    preset = load_settings(overrides=["anchor=smollm2"])
    assert isinstance(preset, CalmKVRealSettings)
    assert preset.anchor_path is None and preset.connections is None  # the paper's default wiring
    assert len(preset.seeds) >= 3 and preset.augment.layers % 4 == 0
    from_file = load_settings(overrides=[f"file={STUDY_FILE}"])
    assert from_file.anchor == "smollm2" and len(from_file.seeds) >= 3
    changed = load_settings(overrides=[f"file={STUDY_FILE}", "bridge.steps=7", "ops=+-*"])
    assert (changed.bridge.steps, changed.ops, changed.bridge.lr) == (7, "+-*", from_file.bridge.lr)


def test_the_gpu_study_file_validates_and_gives_the_bridge_more_keys():
    gpu, cpu = load_settings(overrides=[f"file={GPU_FILE}"]), load_settings(overrides=[f"file={STUDY_FILE}"])
    assert gpu.anchor == "smollm2" and gpu.device == "cuda" and gpu.bf16 and len(gpu.seeds) >= 3
    assert gpu.n_keys * gpu.train_fraction >= 5 * cpu.n_keys * cpu.train_fraction  # composition keys
    assert set(gpu.ablations) == set(cpu.ablations) and gpu.max_value == cpu.max_value


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["anchor=smolm2"], "anchor"),
        (["anchor_path=x", "augment.layers=2"], "augment.layers"),
        (["anchor_path=x", "augment.heads=3"], "augment"),
        (["anchor_path=x", "ops=+/"], "ops"),
        (["anchor_path=x", "ablations=[lora, nope]"], "ablations"),
        (["anchor_path=x", "precheck.sets=[nope]"], "precheck.sets"),
        (["anchor_path=x", "precheck.model=base"], "precheck.model"),
        (["anchor_path=x", "question=Compute this"], "question"),
        (["anchor_path=x", "seeds=[]"], "seeds"),
        (["anchor_path=x", "seeds=[1, 1]"], "seeds"),
        (["anchor_path=x", "min_terms=5", "max_terms=3"], "min_terms"),
        (["anchor_path=x", "n_keys=500", "unique_values=true"], "n_keys"),
        (["anchor_path=x", "connections=[{anchor_layer: 0, augment_layer: 99}]"], "augment_layer"),
        (["anchor_path=x", "bridge.stepz=3"], "bridge.stepz"),
    ],
)
def test_bad_settings_name_the_field(overrides, field):
    with pytest.raises(RecipeError, match=re.escape(field)):
        load_settings(overrides=overrides)


# -- data ---------------------------------------------------------------------------------------------
def _keys(prompt: str) -> set[str]:
    expression = prompt.split("Evaluate ", 1)[1].split("<|im_end|>")[0]
    return set(re.findall("[a-z]+", expression))


def test_chat_rows_are_spaced_chat_turns_over_the_composition_keys():
    settings = CalmKVRealSettings.quick()
    kv = settings.kv(0)
    inputs = {"kv": kv.__dict__, "instruction": settings.question, "render": "chat", "n": 30, "seed": 0}
    rows = _rows({**inputs, "data": "kv_arithmetic_k20"})
    table = KVTable(kv)
    assert rows and all(r["prompt"].startswith("<|im_start|>user\nEvaluate ") for r in rows)
    assert all(r["prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n") for r in rows)
    assert set().union(*(_keys(r["prompt"]) for r in rows)) <= set(table.train_keys)
    assert all(re.fullmatch(r"-?\d+", r["completion"]) for r in rows)
    sub = TASK_SETS.get("chat")(kv, settings.question)["kv_substitution"].examples("train", 5)
    for e in sub:  # the answer is the spaced expression with each key's value in place
        expression = e.prompt.split("Evaluate ", 1)[1].split("<|im_end|>")[0]
        assert e.answer == re.sub("[a-z]+", lambda m: str(table.values[m.group()]), expression)
    assert spaced("ab+cde*7-x") == "ab + cde * 7 - x"


# -- pre-check ----------------------------------------------------------------------------------------
def test_precheck_pairs_are_token_aligned():
    tokenizer = tiny_bpe_tokenizer()
    kv = CalmKVRealSettings.quick().kv(0)
    for e in patch_examples(kv, "Evaluate {expression}", tokenizer, 8):
        assert len(e.key_ids) == len(e.oracle_ids) == len(e.labels)
        inside = set(SETS.get("operands")(e))
        differ = {t for t, (a, b) in enumerate(zip(e.key_ids, e.oracle_ids, strict=True)) if a != b}
        assert differ and differ <= inside < set(range(e.prompt_len))
        answer = tokenizer.decode([t for t in e.labels if t != -100], skip_special_tokens=True)
        oracle = tokenizer.decode(e.oracle_ids[: e.prompt_len]).split("Evaluate ")[1].split("<|im_end|>")[0]
        assert int(answer) == eval(oracle)  # noqa: S307 - digits and + - only


def test_patching_moves_the_loss_only_where_later_blocks_can_read(bpe_anchor):
    from graftkit.zoo.train import load_model

    model, tokenizer = load_model(bpe_anchor)
    examples = patch_examples(CalmKVRealSettings.quick().kv(0), "Evaluate {expression}", tokenizer, 4)
    out = patching_losses(model.eval(), examples, [0, 7], ["operands", "expression"], tokenizer.pad_token_id)
    assert out["key"] != out["oracle"]
    assert out["patched"]["expression"]["0"] != pytest.approx(out["key"], abs=1e-6)  # the patch took effect
    # After the last block, prompt states reach no answer position: nothing changes.
    assert out["patched"]["operands"]["7"] == pytest.approx(out["key"], abs=1e-4)
    assert out["recovered"]["operands"]["7"] == pytest.approx(0.0, abs=1e-3)


# -- the tiny study -----------------------------------------------------------------------------------
def test_tiny_study_has_the_table1_shape(tiny_run):
    settings, result, _ = tiny_run
    assert (
        set(result["table1"]) == set(PAPER_TABLE1) == {"kv_substitution", "numeric_arithmetic", "kv_arithmetic_heldout"}
    )
    for row, cols in result["table1"].items():
        assert set(cols) == {"m_A", "m_B", "calm"}
        for col, value in cols.items():
            low, high = result["table1_ci"][row][col]
            assert 0.0 <= value <= 100.0 and low <= value <= high
    assert result["paper_table1"]["kv_arithmetic_heldout"] == {"m_A": 0.7, "m_B": 0.0, "calm": 84.3}
    expected = {"CALM", "CALM, random m_A", "CALM, untrained m_A", "CALM, encoder mode", "LoRA on m_B"}
    assert set(result["ablations"]) == expected
    for row in ("m_A", "m_B", *expected):
        assert all(len(v["per_seed"]) == len(settings.seeds) for v in result["scores"][row].values())
    assert result["precheck"]["first_layer"] == result["connections"][0]["anchor_layer"] == 3  # 8 layers, 2 links
    json.dumps(result)


def test_stage_times_and_sizes_are_recorded(tiny_run):
    settings, result, _ = tiny_run
    for stage in ("m_A", "m_B", "CALM", "CALM, encoder mode", "LoRA on m_B", "score: CALM"):
        assert set(result["seconds"][stage]) == {str(s) for s in settings.seeds}
        assert all(v > 0 for v in result["seconds"][stage].values())
    params = result["params"]
    assert abs(params["lora_trainable"] - params["bridge"]) <= 0.25 * params["bridge"]


def test_bridges_train_on_chat_composition_rows_and_encoder_mode(tiny_run):
    settings, result, _ = tiny_run
    calm = Path(result["paths"]["CALM (seed 1)"])
    rows = [json.loads(line) for line in (calm / "composition.jsonl").open()]
    assert set().union(*(_keys(r["prompt"]) for r in rows)) <= set(KVTable(settings.kv(1)).train_keys)
    encoder = Path(result["paths"]["CALM, encoder mode (seed 1)"])
    assert "encoder_mode: true" in (encoder / "recipe.yaml").read_text()
    assert "encoder_mode: false" in (calm / "recipe.yaml").read_text()
    mb_info = json.loads((Path(result["paths"]["m_B (seed 0)"]) / "training.json").read_text())
    assert mb_info["frozen"] == ["model.embed_tokens.weight"] and mb_info["data"]["task"] == "numeric_arithmetic"
    cfg = json.loads((Path(result["paths"]["m_A (seed 0)"]) / "config.json").read_text())
    assert cfg["vocab_size"] == len(tiny_bpe_tokenizer()) and cfg["num_hidden_layers"] == 8


def test_report_and_cli_rerun_from_the_cache(tiny_run, bpe_anchor, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import graftkit.study.engine.units as units_module
    from graftkit.study.cli import app

    _, result, root = tiny_run
    json_path, md_path = write_report(result, tmp_path / "calm_kv_real.json")
    text = md_path.read_text()
    assert "KV-Arithmetic (80% held-out keys)" in text and "paper CALM" in text and "pre-check" in text
    monkeypatch.setenv("GRAFTKIT_CACHE", str(root))
    monkeypatch.setattr(units_module, "resolve", lambda fn: pytest.fail(f"unit {fn} ran again"))
    out = tmp_path / "cli.json"
    run = CliRunner().invoke(app, ["calm-kv", "--quick", f"anchor_path={bpe_anchor}", "--json", str(out)])
    assert run.exit_code == 0, run.output
    again = json.loads(out.read_text())
    assert again["table1"] == result["table1"] and out.with_suffix(".md").is_file()
    assert json.loads(json_path.read_text())["table1"] == result["table1"]


def test_precheck_only_builds_only_m_b(bpe_anchor, tmp_path):
    settings = CalmKVRealSettings.quick(anchor_path=bpe_anchor, precheck_only=True)
    result = run_study(settings, backend=LocalBackend(), store=UnitStore(tmp_path))
    assert "scores" not in result and set(result["precheck"]["patched"]) == {"operands", "expression"}
    folders = sorted(
        p.name.rsplit("-", 1)[0] for p in UnitStore(tmp_path).dir.iterdir() if not p.name.endswith(".lock")
    )
    assert folders == ["precheck", "train_model"]
