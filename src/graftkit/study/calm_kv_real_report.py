"""Tables of the real-anchor CALM study: Table 1 beside the paper's, ablations, pre-check, stage times.

:func:`finish` adds the summary entries to a :func:`~graftkit.study.calm_kv_real.run_real_study` result;
:func:`write_report` writes it as JSON and Markdown (``docs/results/calm_kv_real.json`` / ``.md``). The
JSON's ``table1`` is ``{kv_substitution | numeric_arithmetic | kv_arithmetic_heldout: {m_A, m_B, calm}}``
in %, the mean over seeds; ``table1_ci`` holds the 95% t-intervals, ``paper_table1`` the paper's numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graftkit.study.calm_kv_report import ABLATION_SETS, NAMES, markdown_table

PAPER_TABLE1 = {
    "kv_substitution": {"m_A": 98.1, "m_B": 0.0, "calm": 92.9},
    "numeric_arithmetic": {"m_A": 4.2, "m_B": 73.7, "calm": 72.0},
    "kv_arithmetic_heldout": {"m_A": 0.7, "m_B": 0.0, "calm": 84.3},
}
"""Bansal et al. (2024), Table 1, accuracy in %."""
TABLE1_DATA = {
    "kv_substitution": "kv_substitution",
    "numeric_arithmetic": "numeric_arithmetic",
    "kv_arithmetic_heldout": "kv_arithmetic_k80",
}
"""Table 1's rows → the study's test sets (the paper's KV-Arithmetic row is over held-out keys)."""
COLUMNS = {"m_A": "m_A", "m_B": "m_B", "calm": "CALM"}


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with ``table1``, ``table1_ci``, ``paper_table1``, ``ablations`` and ``seconds_total``
    (a pre-check-only result gains only ``paper_table1``)."""
    out = {**result, "paper_table1": PAPER_TABLE1}
    return out | summary(result, TABLE1_DATA, ABLATION_SETS) if "scores" in result else out


def summary(result: dict[str, Any], table_data: dict[str, str], ablation_sets: Sequence[str]) -> dict[str, Any]:
    """A scored result's summary entries: ``table1`` (``table_data``'s rows → ``{m_A, m_B, calm}``, the mean
    over seeds in %), ``table1_ci`` (their 95% t-intervals), ``ablations`` (every other row on
    ``ablation_sets``) and ``seconds_total``."""
    scores = result["scores"]
    table1 = {row: {c: scores[label][d]["mean"] for c, label in COLUMNS.items()} for row, d in table_data.items()}
    table1_ci = {
        row: {c: [scores[label][d]["low"], scores[label][d]["high"]] for c, label in COLUMNS.items()}
        for row, d in table_data.items()
    }
    others = [row for row in scores if row not in ("m_A", "m_B")]
    ablations = {row: {d: scores[row][d]["mean"] for d in ablation_sets} for row in others}
    total = round(sum(v for per in result["seconds"].values() for v in per.values()), 1)
    return {"table1": table1, "table1_ci": table1_ci, "ablations": ablations, "seconds_total": total}


def cell(score: dict[str, Any]) -> str:
    """``mean [low, high]`` of one score over seeds."""
    return f"{score['mean']:.1f} [{score['low']:.1f}, {score['high']:.1f}]"


def _table1_rows(result: dict[str, Any]) -> list[list[str]]:
    scores, n = result["scores"], result["n_examples"]
    paper = {d: PAPER_TABLE1[row] for row, d in TABLE1_DATA.items()}
    rows = []
    for data, name in NAMES.items():
        ours = [cell(scores[label][data]) for label in COLUMNS.values()]
        theirs = [f"{paper[data][c]:.1f}" if data in paper else "–" for c in COLUMNS]
        rows.append([name, str(n[data]), *ours, *theirs])
    return rows


def precheck_markdown(check: dict[str, Any]) -> str:
    """The pre-check's losses per position set and layer, with the recovered shares."""
    layers = list(next(iter(check["patched"].values())))
    head = ["Patched positions", *(f"after block {j}" for j in layers)]
    rows = [
        [name, *(f"{by[j]:.3f} ({check['recovered'][name][j]})" for j in layers)]
        for name, by in check["patched"].items()
    ]
    verdict = "reads" if check["passes"] else "does not read"
    return "\n".join(
        [
            f"Answer loss on {check['n']} expressions (model: `{check['model']}`): key prompts {check['key']:.3f}, "
            f"oracle prompts {check['oracle']:.3f}. Cells: patched loss (recovered share of the gap).",
            "",
            markdown_table(head, rows),
            "",
            f"Judged on `{check['judged_set']}` after block {check['first_layer']} (the first connection): the "
            f"anchor **{verdict}** operands after it (threshold {check['threshold']}).",
        ]
    )


def deviations(settings: dict[str, Any]) -> list[str]:
    """How these settings differ from the paper's §4.1 setup (one line each)."""
    anchor = settings["anchor_path"] or settings["anchor"]
    out = [
        f"Models: m_B is `{anchor}` fine-tuned for {settings['anchor_train']['steps']} steps at lr "
        f"{settings['anchor_train']['lr']:g}, m_A a "
        f"{settings['augment']['layers']}-layer, hidden-{settings['augment']['hidden']} Llama trained from "
        "scratch over its tokenizer (paper: PaLM2-S and PaLM2-XXS).",
        f"Keys: {settings['n_keys']}, values 1..{settings['max_value']}"
        + ("" if settings["unique_values"] else " (drawn per key, so keys may share a value)")
        + f"; the bridge sees {settings['n_composition']} expressions at most, {settings['bridge']['steps']} steps.",
    ]
    terms = sorted({settings["min_terms"], settings["max_terms"]})
    if terms != [3, 6]:
        out.append(f"Expressions: {'–'.join(map(str, terms))} operands (paper: 3–6).")
    if set(settings["ops"]) != set("+-*"):
        out.append(f"Operators: {' '.join(settings['ops'])} (paper: + - ×).")
    return out


def markdown(result: dict[str, Any]) -> str:
    """The whole report: Table 1, ablations, pre-check, sizes, stage times and the resolved settings."""
    lines = [f"# CALM key-value arithmetic on a real anchor ({result['anchor']})", ""]
    lines += [f"Run {result['run_info']['timestamp']}, revision {result['run_info']['git_revision']}.", ""]
    if "scores" in result:
        seeds = ", ".join(map(str, result["seeds"]))
        lines += [f"Exact match %, mean over seeds {seeds} [95% t-interval]; n: test examples per dataset.", ""]
        head = ["Dataset", "n", "m_A", "m_B", "CALM", "paper m_A", "paper m_B", "paper CALM"]
        lines += [markdown_table(head, _table1_rows(result)), ""]
        lines += ablation_lines(result, {d: NAMES[d] for d in ABLATION_SETS}) + run_lines(result)
    lines += ["## Anchor pre-check (activation patching)", "", precheck_markdown(result["precheck"]), ""]
    lines += ["## Deviations from the paper", "", *(f"- {d}" for d in deviations(result["settings"])), ""]
    return "\n".join(lines + settings_lines(result))


def ablation_lines(result: dict[str, Any], columns: dict[str, str]) -> list[str]:
    """The "Ablations" section: every composed or fine-tuned row on ``columns`` (dataset → heading)."""
    rows = [[row, *(cell(result["scores"][row][d]) for d in columns)] for row in result["ablations"]]
    return ["## Ablations", "", markdown_table(["Variant", *columns.values()], rows), ""]


def run_lines(result: dict[str, Any]) -> list[str]:
    """Parameter counts and the seconds of every stage and seed, with their total."""
    seeds = result["seeds"]
    lines = [f"Parameters: {json.dumps(result['params'])}.", "", "## Seconds per stage", ""]
    times = [[k, *(f"{per.get(str(s), 0.0):.1f}" for s in seeds)] for k, per in result["seconds"].items()]
    lines += [markdown_table(["Stage", *(f"seed {s}" for s in seeds)], times), ""]
    return [*lines, f"Total: {result['seconds_total']} s.", ""]


def settings_lines(result: dict[str, Any]) -> list[str]:
    """The resolved settings as a JSON block."""
    return ["## Settings", "", "```json", json.dumps(result["settings"], indent=2), "```", ""]


def write_report(
    result: dict[str, Any], path: str | Path, to_markdown: Callable[[dict[str, Any]], str] = markdown
) -> tuple[Path, Path]:
    """Write ``result`` as JSON into ``path`` and as Markdown (``to_markdown``) beside it (same name, ``.md``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    md = path.with_suffix(".md")
    md.write_text(to_markdown(result))
    return path, md


def render(result: dict[str, Any]) -> Any:
    """The Markdown report as a rich renderable (what ``graft study calm-kv anchor=...`` prints)."""
    from rich.markdown import Markdown

    return Markdown(markdown(result))
