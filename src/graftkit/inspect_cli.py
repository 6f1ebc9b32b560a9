"""`graft inspect` and `graft check`: thin typer commands over :mod:`graftkit.evaluate`.

Register them on the app with ``app.command("inspect")(inspect_command)`` and
``app.command("check")(check_command)``. Heavy imports happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def inspect_command(
    base: Annotated[Path, typer.Argument(help="Base model folder or weights file.")],
    experts: Annotated[list[Path], typer.Argument(help="One or more fine-tuned checkpoints of the base.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print every statistic as JSON.")] = False,
    top: Annotated[int, typer.Option(help="Tensors listed in the table, largest mean |δ| first.")] = 15,
) -> None:
    """How far experts moved from the base: |δ| statistics, cosines, sign conflicts, DARE verdict."""
    from graftkit.evaluate.inspect_deltas import inspect_deltas, render_inspect

    report = inspect_deltas(base, experts)
    if json_out:
        typer.echo(report.to_json())
    else:
        render_inspect(report, top=top)


def check_command(
    out: Annotated[Path, typer.Argument(help="The merged model folder.")],
    experts: Annotated[
        list[Path] | None,
        typer.Argument(help="The experts that were merged (optional)."),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option("--against", help="The base model the merge started from."),
    ] = None,
    texts: Annotated[
        Path | None,
        typer.Option("--texts", help="Probe texts, one per line (default: zoo task samples)."),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option("--tasks", help="Comma-separated zoo tasks to sample when --texts is not given."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="cpu, cuda, ...; default CUDA when available."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Probe a merged model beside its parents; exit 2 if it looks broken (NaN, loss blow-up, = base)."""
    from graftkit.evaluate.sanity import SanityCheckError, render_check, sanity_check

    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    report = sanity_check(out, against, experts or [], texts, tasks=task_list, device=device)
    if json_out:
        typer.echo(report.to_json())
    else:
        render_check(report)
    if not report.ok:
        raise SanityCheckError(
            f"{out}: the merged model failed {len(report.flags)} sanity check(s): "
            + "; ".join(report.flags)
            + ". Check the recipe's weights and parameters (and the experts' files) and merge again."
        )
