"""Rich table of a ``graft check`` :class:`~graftkit.evaluate.sanity.CheckReport`, with its flags."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from graftkit.evaluate.sanity import CheckReport


def render_check(report: CheckReport, console: Console | None = None) -> None:
    """Print the probe table and the flags (or a pass line)."""
    console = console or Console()
    table = Table(title=f"Probe: {len(report.texts)} texts from {report.texts_source}")
    for col in ("model", "path", "loss (nats/token)", "perplexity", "tokens", "finite"):
        table.add_column(col, justify="right" if col in ("loss (nats/token)", "perplexity", "tokens") else "left")
    for p in (report.merged, *report.parents):
        loss = f"{p.loss:.4f}" if math.isfinite(p.loss) else "–"
        ppl = f"{p.perplexity:.4g}" if math.isfinite(p.perplexity) else "–"
        finite = "yes" if p.finite else "[red]NO[/]"
        table.add_row(p.role, p.path, loss, ppl, str(p.tokens), finite)
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}")
    if report.ok:
        console.print("[green]check passed[/]: no NaN/Inf, loss in line with the parents, not a copy of the base")
    for flag in report.flags:
        console.print(f"[red]FLAG[/] {flag}")
