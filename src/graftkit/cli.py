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
    resume: Annotated[bool, typer.Option(help="Continue an interrupted merge into OUT.")] = False,
    check: Annotated[bool, typer.Option(help="Probe the merged model against its parents.")] = False,
) -> None:
    """Merge the models a recipe names into a new Hugging Face checkpoint."""
    from graftkit.merge.api import merge as run

    result = run(
        recipe, out, device=device, seed=seed, overwrite=overwrite, threads=threads,
        max_shard_size=max_shard_size, progress=progress, resume=resume,
    )
    typer.echo(f"merged model written to {result}")
    if check:
        from graftkit.merge.report import check_merged

        check_merged(recipe, result)


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


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Argument(help="Model folder (any Hugging Face causal LM with a tokenizer).")],
    tasks: Annotated[str, typer.Option(help="Comma-separated task names (see `graft tasks`).")],
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    n: Annotated[int, typer.Option(help="Examples per task.")] = 200,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write scores as JSON here.")] = None,  # noqa: UP007
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda when available).")] = None,  # noqa: UP007
) -> None:
    """Score a model on registered tasks (exact match by greedy decoding)."""
    from graftkit.evaluate import run_eval

    run_eval(model, [t.strip() for t in tasks.split(",") if t.strip()], split, n, json_out, device=device)


@app.command("tasks")
def list_tasks() -> None:
    """List the registered tasks by kind."""
    from graftkit.zoo.tasks import TASKS

    for name, task in TASKS.items():
        typer.echo(f"{task.kind:9} {name}")


@app.command()
def demo() -> None:
    """Build tiny models, merge them with several methods and report (no data needed)."""
    from graftkit.demo import run_demo

    run_demo()


def _register_subcommands() -> None:
    from graftkit.inspect_cli import check_command, inspect_command

    app.command("inspect")(inspect_command)
    app.command("check")(check_command)


_register_subcommands()


def main() -> None:
    """Console entry point: user errors print one paragraph and exit 2, without a traceback."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        app()
    except GraftError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        sys.exit(err.exit_code)
