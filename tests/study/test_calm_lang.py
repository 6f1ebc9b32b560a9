"""The CALM language study: its settings, the synthetic language, its data, and a tiny run end to end.

SmolLM2 is replaced by the tiny Llama over a tiny byte-level BPE tokenizer of ``tiny_bpe_anchor``, so the
whole pipeline (m_B on English problems, m_A on translation over the anchor's tokenizer, bridges incl.
encoder mode, LoRA, scores over two seeds, report, CLI rerun from the cache) runs in seconds.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from tiny_bpe_anchor import run_tiny_study

from graftkit.errors import RecipeError
from graftkit.study.calm_kv_stages import _rows
from graftkit.study.calm_lang import run_lang_study
from graftkit.study.calm_lang_data import ITEMS, NAMES, TEMPLATES, LangConfig, lang_tasks, number_words, problem
from graftkit.study.calm_lang_report import write_report
from graftkit.study.calm_lang_script import GROUPS, SYLLABLES, Script
from graftkit.study.calm_lang_settings import CalmLangSettings, load_lang_settings

STUDY_FILE = Path(__file__).resolve().parents[2] / "studies" / "calm_lang.yaml"


# -- settings -----------------------------------------------------------------------------------------
def test_the_preset_and_the_study_file_validate():
    preset = load_lang_settings()
    assert preset.anchor == "smollm2" and preset.anchor_path is None and preset.connections is None
    assert len(preset.seeds) >= 3 and preset.augment.layers % 4 == 0
    assert preset.augment_train.seq_len >= 96  # a translation prompt and its answer fit (~84 SmolLM2 tokens)
    from_file = load_lang_settings(overrides=[f"file={STUDY_FILE}"])
    assert from_file == preset  # the study file spells out the defaults
    changed = load_lang_settings(overrides=[f"file={STUDY_FILE}", "bridge.steps=7", "ops=+-*", "max_number=12"])
    assert (changed.bridge.steps, changed.ops, changed.max_number) == (7, "+-*", 12)
    assert changed.bridge.lr == preset.bridge.lr
    assert changed.data_spec(3) == {"lang": {"seed": 3, "max_number": 12, "ops": "+-*"}}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["anchor=smolm2"], "anchor"),
        (["augment.layers=2"], "augment.layers"),
        (["augment.heads=3"], "augment"),
        (["ops=+/"], "ops"),
        (["ablations=[lora, nope]"], "ablations"),
        (["question=Solve this"], "question"),
        (["question='{problem} in {language}'"], "question"),
        (["seeds=[]"], "seeds"),
        (["seeds=[1, 1]"], "seeds"),
        (["max_number=100"], "max_number"),
        (["max_number=1"], "max_number"),
        (["n_composition=0"], "n_composition"),
        (["connections=[{anchor_layer: 0, augment_layer: 99}]"], "augment_layer"),
        (["bridge.stepz=3"], "bridge.stepz"),
        (["n_keys=20"], "n_keys"),  # a key-value field is not a language field
    ],
)
def test_bad_settings_name_the_field(overrides, field):
    with pytest.raises(RecipeError, match="calm-lang settings have errors") as err:
        load_lang_settings(overrides=overrides)
    assert re.search(re.escape(field), str(err.value))


def test_a_missing_study_file_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_lang_settings(overrides=[f"file={tmp_path / 'nope.yaml'}"])


# -- the language -------------------------------------------------------------------------------------
def _random_text(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ    .,?!-'0123456789éß\n"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_decode_inverts_encode_on_any_text(seed):
    script, rng = Script(seed), random.Random(seed)
    texts = [_random_text(rng) for _ in range(400)]
    texts += [problem(LangConfig(seed, 99, "+-*"), rng)[0] for _ in range(200)]
    texts += ["THE thing", "Theatre THEN tHe", "thethethe", "x-ray 42 é Ab"]
    for text in texts:
        encoded = script.encode(text)
        assert script.decode(encoded) == text
        assert re.sub("[A-Za-z]", "", encoded) == re.sub("[A-Za-z]", "", text)  # only letters change


def test_the_script_is_a_seeded_bijection_of_letter_groups():
    script = Script(0)
    assert set(script.forward) == set(GROUPS) and len(set(script.forward.values())) == len(GROUPS)
    assert set(script.forward.values()) <= set(SYLLABLES) and all(len(s) == 2 for s in SYLLABLES)
    assert Script(0).forward == script.forward != Script(1).forward  # same seed, same language
    # A golden value: changing the language silently would make every cached model of the study stale.
    assert script.encode("Ann has seven apples.") == "Poda fiji cutuda cegegesuji."
    assert script.encode("apples") in script.encode("Eva had two apples, then lost one.")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_problems_words_become_new_words(seed):
    script = Script(seed)
    words = {w for t in (*TEMPLATES["+"], *TEMPLATES["-"], *TEMPLATES["*"]) for w in re.findall("[a-z]+", t)}
    words |= {n.lower() for n in NAMES} | set(ITEMS) | {number_words(n) for n in range(100)}
    encoded = {script.encode(w) for w in words}
    assert len(encoded) == len(words)  # distinct words stay distinct
    assert len(encoded & words) <= 1  # and almost none is an English word of the problems (seed 2: Leo → Hana)


@pytest.mark.parametrize("bad", ["xyz", "qq", "Ba1cE", "bA"])
def test_decode_refuses_text_that_is_not_the_language(bad):
    with pytest.raises(ValueError, match="not a word of script 0"):
        Script(0).decode(bad)


# -- data ---------------------------------------------------------------------------------------------
def test_number_words():
    assert [number_words(n) for n in (0, 7, 13, 20, 42, 99)] == [
        "zero",
        "seven",
        "thirteen",
        "twenty",
        "forty-two",
        "ninety-nine",
    ]
    with pytest.raises(ValueError):
        number_words(100)


def test_problems_are_answered_right_and_never_negative():
    value = {number_words(n): n for n in range(100)}
    rng = random.Random(0)
    for _ in range(300):
        text, answer = problem(LangConfig(0, 30, "+-*"), rng)
        a, b = (value[w] for w in re.findall(r"[a-z]+(?:-[a-z]+)?", text) if w in value)
        expected = a * b if "boxes" in text else a - b if ("gives" in text or "lost" in text) else a + b
        assert answer == expected >= 0


def test_datasets_share_prompts_and_split_by_the_english_problem():
    tasks = lang_tasks(LangConfig(seed=2), "{problem}")
    script = Script(2)
    for example in tasks["synthetic_task"].examples("test", 20):
        english = tasks["synthetic_task"].english(example.prompt)
        assert example.prompt == tasks["translation"].format(script.encode(english))
        assert tasks["english_task"].split_of(tasks["english_task"].format(english)) == "test"
        assert tasks["translation"].split_of(example.prompt) == "test"
        assert example.answer.isdigit()
    for example in tasks["translation"].examples("train", 10):
        assert example.answer == tasks["translation"].english(example.prompt)
        assert example.prompt.startswith("<|im_start|>user\n") and "apples" not in example.prompt


def test_composition_rows_are_synthetic_train_problems_with_english_answers():
    settings = CalmLangSettings.quick(anchor_path="x")
    inputs = {**settings.data_spec(1), "instruction": settings.question, "render": "chat", "n": 25, "seed": 1}
    rows = _rows({**inputs, "data": settings.DATA.composition})
    task = lang_tasks(settings.lang(1), settings.question)["synthetic_task"]
    assert len(rows) == 25 and all(r["completion"].isdigit() for r in rows)
    assert all(task.split_of(r["prompt"]) == "train" for r in rows)
    assert all(" has " not in r["prompt"] and " had " not in r["prompt"] for r in rows)  # not English


# -- the tiny study -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(bpe_anchor, tmp_path_factory):
    """The quick language study on the stand-in anchor, into a fresh store under ``$GRAFTKIT_CACHE``."""
    return run_tiny_study(tmp_path_factory, bpe_anchor, load_lang_settings, run_lang_study)


def test_tiny_study_has_the_table1_shape(tiny_run):
    settings, result, _ = tiny_run
    assert result["study"] == "calm_lang"
    assert set(result["table1"]) == {"translation", "english_task", "synthetic_task"}
    for row, cols in result["table1"].items():
        assert set(cols) == {"m_A", "m_B", "calm"}
        for col, value in cols.items():
            low, high = result["table1_ci"][row][col]
            assert 0.0 <= value <= 100.0 and low <= value <= high
    expected = {"CALM", "CALM, random m_A", "CALM, untrained m_A", "CALM, encoder mode", "LoRA on m_B"}
    assert set(result["ablations"]) == set(result["forgetting"]) == expected
    for row in ("m_A", "m_B", *expected):
        assert set(result["scores"][row]) == {"translation", "english_task", "synthetic_task"}
        assert all(len(v["per_seed"]) == len(settings.seeds) for v in result["scores"][row].values())
    lora, m_b = result["scores"]["LoRA on m_B"]["english_task"]["mean"], result["scores"]["m_B"]["english_task"]
    assert result["forgetting"]["LoRA on m_B"] == pytest.approx(lora - m_b["mean"])
    example = result["examples"]["synthetic_task"]
    assert Script(settings.seeds[0]).encode(example["english"]) in example["prompt"] and example["answer"].isdigit()
    json.dumps(result)


def test_tiny_study_trains_each_model_on_its_own_data(tiny_run):
    settings, result, _ = tiny_run
    info = {
        label: json.loads((Path(result["paths"][f"{label} (seed 1)"]) / "training.json").read_text())
        for label in ("m_A", "m_B", "m_A untrained")
    }
    lang = settings.data_spec(1)["lang"]
    assert info["m_A"]["data"] == {"kind": "task", "lang": lang, "question": "{problem}", "task": "translation"}
    assert info["m_B"]["data"]["task"] == "english_task" and info["m_B"]["frozen"] == ["model.embed_tokens.weight"]
    assert info["m_A untrained"]["data"]["kind"] == "text"
    calm = Path(result["paths"]["CALM (seed 1)"])
    rows = [json.loads(line) for line in (calm / "composition.jsonl").open()]
    task = lang_tasks(settings.lang(1), settings.question)["synthetic_task"]
    assert rows and all(task.split_of(r["prompt"]) == "train" for r in rows)  # decodes in seed 1's language
    assert "encoder_mode: true" in (Path(result["paths"]["CALM, encoder mode (seed 1)"]) / "recipe.yaml").read_text()
    for stage in ("m_A", "m_B", "CALM", "LoRA on m_B", "score: CALM"):
        assert set(result["seconds"][stage]) == {str(s) for s in settings.seeds}


def test_report_and_cli_rerun_from_the_cache(tiny_run, bpe_anchor, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import graftkit.study.engine.units as units_module
    from graftkit.study.cli import app

    _, result, root = tiny_run
    json_path, md_path = write_report(result, tmp_path / "calm_lang.json")
    text = md_path.read_text()
    assert "Word problems in the synthetic language" in text and "English problems (forgetting)" in text
    assert json.loads(json_path.read_text())["table1"] == result["table1"]
    monkeypatch.setenv("GRAFTKIT_CACHE", str(root))
    monkeypatch.setattr(units_module, "resolve", lambda fn: pytest.fail(f"unit {fn} ran again"))
    out = tmp_path / "cli.json"
    run = CliRunner().invoke(app, ["calm-lang", "--quick", f"anchor_path={bpe_anchor}", "--json", str(out)])
    assert run.exit_code == 0, run.output
    assert json.loads(out.read_text())["table1"] == result["table1"] and out.with_suffix(".md").is_file()
