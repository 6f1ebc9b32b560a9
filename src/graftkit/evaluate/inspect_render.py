"""Rich tables of an :class:`~graftkit.evaluate.inspect_deltas.InspectReport` (``graft inspect``)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from graftkit.evaluate.inspect_deltas import DARE_RULE, THRESHOLDS, InspectReport


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def expert_labels(paths: list[str]) -> list[str]:
    """Short distinct labels: each folder's name, or ``parent/name`` where names repeat (``.../model``)."""
    names = [Path(e).name or e for e in paths]
    if len(set(names)) == len(names):
        return names
    return [
        f"{Path(e).parent.name}/{Path(e).name}" if names.count(n) > 1 else n for e, n in zip(paths, names, strict=True)
    ]


def render_inspect(report: InspectReport, console: Console | None = None, top: int = 15) -> None:
    """Print the whole-model table, the expert-pair table and the ``top`` tensors by mean |δ|."""
    console = console or Console()
    names = expert_labels(report.experts)

    summary = Table(title=f"Deltas from {report.base} ({report.numel:,} entries per expert)")
    for col in ("expert", "mean |δ|", "max |δ|", *(f"|δ|>{t}" for t in THRESHOLDS), "‖δ‖", "DARE"):
        summary.add_column(col, justify="left" if col in ("expert", "DARE") else "right")
    for name, s, v in zip(names, report.totals, report.verdicts(), strict=True):
        shares = [f"{s.share_above(t):.1%}" for t in THRESHOLDS]
        verdict = "[green]applicable[/]" if v.dare_applicable else "[red]not applicable[/]"
        summary.add_row(name, _fmt(s.mean_abs), _fmt(s.max_abs), *shares, _fmt(s.norm), verdict)
    console.print(summary)

    if report.pairs:
        pair_table = Table(title="Expert pairs (whole model)")
        for col in ("experts", "cosine", "sign conflicts"):
            pair_table.add_column(col, justify="left" if col == "experts" else "right")
        for p in report.pairs:
            cos = p.cosine(report.totals[p.i], report.totals[p.j])
            pair_table.add_row(f"{names[p.i]} · {names[p.j]}", _fmt(cos, "+.3f"), f"{p.conflict_rate:.1%}")
        console.print(pair_table)
        if report.any_conflict_rate is not None:
            console.print(f"Entries with a sign conflict among any experts: {report.any_conflict_rate:.1%}")

    ranked = sorted(report.tensors, key=lambda t: -t.largest_mean_abs)[:top]
    tensor_table = Table(title=f"Top {len(ranked)} of {len(report.tensors)} tensors by mean |δ|")
    tensor_table.add_column("tensor", overflow="fold")
    tensor_table.add_column("shape")
    for name in names:
        tensor_table.add_column(f"mean |δ| {name}", justify="right")
    for t in ranked:
        tensor_table.add_row(t.name, "×".join(map(str, t.shape)), *(_fmt(s.mean_abs) for s in t.experts))
    console.print(tensor_table)

    if report.skipped:
        console.print(f"{len(report.skipped)} tensors not compared (see --json for each reason).")
    console.print(f"Rule: {DARE_RULE}")
