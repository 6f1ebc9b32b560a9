"""`graft`: the command line. Each command is a thin wrapper over a library function.

Heavy imports (torch, transformers, matplotlib) happen inside the commands, so `graft --help`
starts in well under a second.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from graftkit.errors import GraftError

app = typer.Typer(
    name="graft",
    help="Build one model out of many: merge, compose, measure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

RecipeArg = Annotated[Path, typer.Argument(help="Merge recipe (YAML).")]


@app.command()
def merge(
    recipe: RecipeArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output model folder.")],
    device: Annotated[str, typer.Option(help="Where the math runs: cpu, cuda, cuda:1 …")] = "cpu",
    seed: Annotated[Optional[int], typer.Option(help="Override the recipe's seed.")] = None,  # noqa: UP007
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="torch intra-op threads.")] = None,  # noqa: UP007
    max_shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 5GB.")] = "5GB",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Merge the models a recipe names into a new Hugging Face checkpoint."""
    from graftkit.merge.api import merge as run

    result = run(
        recipe, out, device=device, seed=seed, overwrite=overwrite, threads=threads,
        max_shard_size=max_shard_size, progress=progress,
    )
    typer.echo(f"merged model written to {result}")


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check a recipe and its checkpoints' headers without reading any weights."""
    from graftkit.merge.report import validate_recipe

    typer.echo(validate_recipe(recipe))


@app.command()
def methods() -> None:
    """List the merge methods, their parameters and papers."""
    from graftkit.merge.report import methods_table

    methods_table()


@app.command()
def demo() -> None:
    """Build tiny models, merge them with several methods and report (no data needed)."""
    from graftkit.demo import run_demo

    run_demo()


def main() -> None:
    """Console entry point: user errors print one paragraph and exit 2, without a traceback."""
    try:
        app()
    except GraftError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        sys.exit(err.exit_code)
