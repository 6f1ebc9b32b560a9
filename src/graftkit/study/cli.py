"""``graft study``: experiment commands, each a thin wrapper over a library function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Reproduce paper experiments on the zoo's models.", no_args_is_help=True)


@app.callback()
def study() -> None:
    """Reproduce paper experiments on the zoo's models."""


@app.command("calm-kv")
def calm_kv(
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value settings, e.g. bridge.steps=800")] = None,
    quick: Annotated[bool, typer.Option(help="Tiny settings (seconds): checks the pipeline, not the science.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the raw result as JSON.")] = None,
) -> None:
    """CALM key-value arithmetic (Bansal et al. 2024, Table 1 + ablations): train or reuse, score, print."""
    from rich.console import Console

    from graftkit.study.calm_kv import load_settings, run_study
    from graftkit.study.calm_kv_report import render, save_json

    console = Console()
    settings = load_settings(quick=quick, overrides=tuple(overrides or ()))
    result = run_study(settings, log=console.print)
    console.print(render(result))
    if json_out:
        save_json(result, json_out)
