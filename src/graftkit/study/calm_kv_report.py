"""Tables of the CALM key-value study: ours beside the paper's Table 1, the ablations, JSON on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TABLE1_ROWS = ("kv_substitution", "numeric_arithmetic", "kv_arithmetic", "kv_arithmetic_k20", "kv_arithmetic_k80")
NAMES = {
    "kv_substitution": "KV-Substitution",
    "numeric_arithmetic": "Numeric-Arithmetic",
    "kv_arithmetic": "KV-Arithmetic (all keys)",
    "kv_arithmetic_k20": "KV-Arithmetic (20% composition keys)",
    "kv_arithmetic_k80": "KV-Arithmetic (80% held-out keys)",
}
MODELS = ("m_A", "m_B", "CALM")
ABLATION_SETS = ("kv_arithmetic_k80", "kv_arithmetic_k20", "kv_arithmetic", "numeric_arithmetic", "kv_substitution")
ABLATIONS = (
    "CALM",
    "CALM, random m_A",
    "CALM, text-only m_A",
    "CALM, encoder mode",
    "LoRA on m_B",
    "CALM, trained on KV-Substitution",
)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table1_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per dataset: ours for m_A / m_B / CALM, then the paper's (where it reports one)."""
    rows = []
    for data in TABLE1_ROWS:
        ours = [_fmt(result["scores"][m][data]) for m in MODELS]
        paper_key = "kv_arithmetic" if data == "kv_arithmetic" else data
        paper = [_fmt(result["paper"][m].get(paper_key)) for m in MODELS]
        rows.append([NAMES[data], str(result["n_examples"][data]), *ours, *paper])
    return rows


def ablation_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per composition variant: KV-Arithmetic on held-out, composition and all keys."""
    return [[label, *(_fmt(result["scores"][label][d]) for d in ABLATION_SETS)] for label in ABLATIONS]


TABLE1_HEAD = ["Dataset", "n", "m_A", "m_B", "CALM", "paper m_A", "paper m_B", "paper CALM"]
ABLATION_HEAD = ["Variant", "KV-Arith held-out 80%", "KV-Arith 20% keys", "KV-Arith all", "Numeric-Arith", "KV-Sub all"]
"""Columns of :func:`ablation_rows`, in the order of :data:`ABLATION_SETS`."""


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def render(result: dict[str, Any]) -> Any:
    """Both tables as one rich renderable (what ``graft study calm-kv`` prints); a real-anchor result
    renders as its Markdown report."""
    from rich.console import Group

    if result.get("study") == "calm_kv_real":
        from graftkit.study.calm_kv_real_report import render as render_real

        return render_real(result)
    from rich.table import Table

    tables = []
    for title, head, rows in (
        (
            f"CALM key-value arithmetic, exact match % (n={result['n_eval']} per dataset)",
            TABLE1_HEAD,
            table1_rows(result),
        ),
        ("Ablations (paper Table 5 settings), exact match %", ABLATION_HEAD, ablation_rows(result)),
    ):
        table = Table(title=title)
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*r)
        tables.append(table)
    return Group(*tables)


def save_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write the raw result (settings, parameter counts, times, every score) as JSON; a real-anchor
    result also writes its Markdown report beside it (same name, ``.md``)."""
    if result.get("study") == "calm_kv_real":
        from graftkit.study.calm_kv_real_report import write_report

        return write_report(result, path)[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def markdown(result: dict[str, Any]) -> str:
    """Both tables, parameter counts and stage times as Markdown (pasted into ``docs/results/calm_kv.md``)."""
    params, seconds = result["params"], result["seconds"]
    lines = [
        "Exact match %; n: test examples per dataset (the same sets for every row).",
        "",
        markdown_table(TABLE1_HEAD, table1_rows(result)),
        "",
        markdown_table(ABLATION_HEAD, ablation_rows(result)),
        "",
        f"- m_A: {params['m_A']:,} parameters; m_B: {params['m_B']:,}.",
        f"- Bridge: {params['bridge']:,} parameters ({params['bridge_percent_of_anchor']}% of m_B); "
        f"LoRA rank {params['lora_rank']}: {params['lora_trainable']:,} trainable parameters.",
        "- Seconds per stage (wall clock, as recorded when the stage was built): "
        + ", ".join(f"{k} {v}" for k, v in seconds.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"
