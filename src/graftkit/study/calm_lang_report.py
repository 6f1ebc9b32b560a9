"""Tables of the CALM language study: Table 1 in the key-value study's form, ablations, forgetting, stage times.

:func:`finish` adds the summary entries to a :func:`~graftkit.study.calm_lang.run_lang_study` result;
:func:`write_report` writes it as JSON and Markdown (``docs/results/calm_lang.json`` / ``.md``). The
JSON's ``table1`` is ``{translation | english_task | synthetic_task: {m_A, m_B, calm}}`` in %, the mean
over seeds; ``table1_ci`` holds the 95% t-intervals and ``forgetting`` each composed or fine-tuned row's
change on the English task against ``m_B`` (in points).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graftkit.study import calm_kv_real_report as kv_report
from graftkit.study.calm_kv_report import markdown_table

TABLE1_DATA = {"translation": "translation", "english_task": "english_task", "synthetic_task": "synthetic_task"}
"""Table 1's rows → the study's test sets."""
NAMES = {
    "translation": "Translation (synthetic → English)",
    "english_task": "Word problems in English",
    "synthetic_task": "Word problems in the synthetic language",
}
ABLATION_SETS = {"synthetic_task": "Synthetic-language problems", "english_task": "English problems (forgetting)"}
ABLATION_SETS |= {"translation": "Translation"}
"""The ablation table's columns (dataset → heading)."""


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with ``table1``, ``table1_ci``, ``ablations``, ``forgetting`` and ``seconds_total``."""
    out = result | kv_report.summary(result, TABLE1_DATA, list(ABLATION_SETS))
    english = result["scores"]["m_B"]["english_task"]["mean"]
    out["forgetting"] = {row: round(scores["english_task"] - english, 2) for row, scores in out["ablations"].items()}
    return out


def deviations(settings: dict[str, Any]) -> list[str]:
    """How these settings differ from the paper's §4.2 setup (one line each)."""
    anchor = settings["anchor_path"] or settings["anchor"]
    return [
        "Language: a seeded syllable transliteration of English (72 letter groups → consonant-vowel syllables), "
        "not a natural low-resource language; the text is templated word problems (12 names, 12 objects, "
        f"numbers 1..{settings['max_number']} as words, operations {' '.join(settings['ops'])}), not GSM8K or "
        "FLORES-200.",
        f"Models: m_B is `{anchor}` fine-tuned for {settings['anchor_train']['steps']} steps on the English "
        f"problems; m_A a {settings['augment']['layers']}-layer, hidden-{settings['augment']['hidden']} Llama "
        "trained from scratch over its tokenizer on parallel text (synthetic → English, the problems without "
        "answers) (paper: PaLM2-S, and PaLM2-XXS trained on low-resource-language data).",
        f"Composition data: at most {settings['n_composition']} problems in the synthetic language with their "
        f"answers, {settings['bridge']['steps']} steps.",
        "Scoring: greedy exact match, zero-shot, one chat turn; a translation counts only when the whole "
        "sentence is right.",
    ]


def _table1_rows(result: dict[str, Any]) -> list[list[str]]:
    scores, n = result["scores"], result["n_examples"]
    cols = kv_report.COLUMNS.values()
    return [[NAMES[d], str(n[d]), *(kv_report.cell(scores[label][d]) for label in cols)] for d in TABLE1_DATA]


def _example_lines(result: dict[str, Any]) -> list[str]:
    lines = ["## The language (first seed)", ""]
    for name, example in result["examples"].items():
        prompt = example["prompt"].split("user\n", 1)[1].split("<|im_end|>")[0]
        english = f" (English: `{example['english']}`)" if name == "synthetic_task" else ""
        lines.append(f"- {NAMES[name]}: `{prompt}` → `{example['answer']}`{english}")
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    """The whole report: Table 1, ablations, forgetting, sizes, stage times and the resolved settings."""
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [f"# CALM on a synthetic language ({result['anchor']})", ""]
    lines += [f"Run {result['run_info']['timestamp']}, revision {result['run_info']['git_revision']}.", ""]
    lines += [f"Exact match %, mean over seeds {seeds} [95% t-interval]; n: test examples per dataset.", ""]
    lines += [markdown_table(["Dataset", "n", "m_A", "m_B", "CALM"], _table1_rows(result)), ""]
    lines += kv_report.ablation_lines(result, ABLATION_SETS)
    change = "; ".join(f"{row} {delta:+.1f}" for row, delta in result["forgetting"].items())
    lines += [f"English problems against m_B (points): {change}.", ""]
    lines += _example_lines(result) + kv_report.run_lines(result)
    lines += ["## Deviations from the paper", "", *(f"- {d}" for d in deviations(result["settings"])), ""]
    return "\n".join(lines + kv_report.settings_lines(result))


def render(result: dict[str, Any]) -> Any:
    """The Markdown report as a rich renderable (what ``graft study calm-lang`` prints)."""
    from rich.markdown import Markdown

    return Markdown(markdown(result))


def write_report(result: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write ``result`` as JSON into ``path`` and as Markdown beside it (same name, ``.md``)."""
    return kv_report.write_report(result, path, markdown)
