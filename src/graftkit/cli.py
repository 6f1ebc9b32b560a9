"""`graft`: the command line. Each command is a thin wrapper over a library function.

Heavy imports (torch, transformers, matplotlib) happen inside the commands, so `graft --help`
starts in well under a second.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from graftkit.errors import GraftError

app = typer.Typer(
    name="graft",
    help="Build one model out of many: merge, compose, measure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Import torch & co. with the cyclic garbage collector paused, then freeze what they built.

    torch's import creates about a million long-lived objects; with the collector running, Python
    walks them again and again during the import and once more at exit (0.8 s of CPU per run on
    a 2-core machine). Frozen objects are never collected, which is right for module state.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


RecipeArg = Annotated[Path, typer.Argument(help="Merge recipe (YAML).")]


@app.command()
def merge(
    recipe: RecipeArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output model folder.")],
    device: Annotated[str, typer.Option(help="Where the math runs: cpu, cuda, cuda:1 …")] = "cpu",
    seed: Annotated[int | None, typer.Option(help="Override the recipe's seed.")] = None,  # noqa: UP007
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch intra-op threads.")] = None,  # noqa: UP007
    max_shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 5GB.")] = "5GB",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted merge into OUT.")] = False,
    durable: Annotated[bool, typer.Option(help="fsync the output before renaming it into place.")] = False,
    check: Annotated[bool, typer.Option(help="Probe the merged model against its parents.")] = False,
    format: Annotated[str, typer.Option(help="safetensors (HF folder) or gguf (one llama.cpp file).")] = "safetensors",
    gguf_type: Annotated[str | None, typer.Option(help="With --format gguf: f16 (default), bf16 or q8_0.")] = None,  # noqa: UP007
    as_lora: Annotated[int | None, typer.Option(help="Write merge − base as a LoRA adapter of rank R.")] = None,  # noqa: UP007
) -> None:
    """Merge the models a recipe names into a new Hugging Face checkpoint (or one GGUF file, or a LoRA adapter)."""
    if check and (format == "gguf" or as_lora is not None):
        raise GraftError(
            "--check probes a Hugging Face folder; with --format gguf run `graft convert OUT.gguf -o DIR` "
            "and `graft check DIR ...` afterwards, or merge to safetensors with --check (not --as-lora)."
        )
    if check:
        _refuse_check_of_adapters(recipe)
    with heavy_imports():
        from graftkit.merge.api import merge as run

    result = run(
        recipe,
        out,
        device=device,
        seed=seed,
        overwrite=overwrite,
        threads=threads,
        max_shard_size=max_shard_size,
        progress=progress,
        resume=resume,
        durable=durable,
        format=format,
        gguf_type=gguf_type,
        **({"as_lora": as_lora} if as_lora is not None else {}),
    )
    if as_lora is not None:
        from graftkit.io.lora_extract import read_report
        from graftkit.merge.lora_out import render_report

        render_report(read_report(result))
        typer.echo(f"merge written as a LoRA adapter to {result}")
        return
    typer.echo(f"merged model written to {result}")
    if check:
        from graftkit.merge.report import check_merged

        check_merged(recipe, result)


def _refuse_check_of_adapters(recipe: Path) -> None:
    """--check loads every parent as a model; a LoRA adapter folder is not one, so refuse before merging."""
    from graftkit.io.lora import is_adapter
    from graftkit.merge.recipe import parse_recipe

    adapters = [m for m in parse_recipe(recipe).model_paths() if is_adapter(m)]
    if adapters:
        raise GraftError(
            f"--check loads each parent as a full model, and {', '.join(adapters)} is a LoRA adapter folder. "
            "Merge without --check, then probe the output against the base alone: "
            "`graft check OUT --against BASE`."
        )


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="A Llama-family .gguf file.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output model folder.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    max_shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 5GB.")] = "5GB",
) -> None:
    """Dequantize a GGUF file into a float32 safetensors Hugging Face folder (config, tokenizer, weights)."""
    with heavy_imports():
        from graftkit.io.gguf_convert import convert_gguf
        from graftkit.merge.run import parse_size

    result = convert_gguf(src, out, overwrite=overwrite, max_shard_size=parse_size(max_shard_size))
    typer.echo(f"converted model written to {result}")


@app.command("extract-lora")
def extract_lora(
    model: Annotated[Path, typer.Argument(help="The fine-tuned (or merged) model.")],
    base: Annotated[Path, typer.Option(help="The model it was fine-tuned from.")],
    rank: Annotated[int, typer.Option(help="LoRA rank r (smaller layers get their own full rank).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Adapter folder to create.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing adapter folder.")] = False,
    device: Annotated[str, typer.Option(help="Where the SVDs run: cpu, cuda …")] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Factorise MODEL − BASE into a PEFT LoRA adapter (truncated SVD of every linear weight's delta)."""
    with heavy_imports():
        from graftkit.merge.lora_out import extract, render_report

    render_report(extract(model, base, rank, out, overwrite=overwrite, device=device, progress=progress))
    typer.echo(f"LoRA adapter written to {out}")


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check a recipe and its checkpoints' headers without reading any weights."""
    with heavy_imports():
        from graftkit.merge.report import validate_recipe

    typer.echo(validate_recipe(recipe))


@app.command()
def methods() -> None:
    """List the merge methods, their parameters and papers."""
    from graftkit.merge.report import methods_table

    methods_table()


@app.command("stats")
def stats(
    expert: Annotated[Path, typer.Argument(help="Expert model folder (save_pretrained, with a tokenizer).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Statistics folder to create.")],
    task: Annotated[str | None, typer.Option(help="Registered task whose train split to use.")] = None,  # noqa: UP007
    jsonl: Annotated[Path | None, typer.Option(help="JSONL of {prompt, completion} instead of --task.")] = None,  # noqa: UP007
    kind: Annotated[str, typer.Option(help="fisher, regmean or both.")] = "both",
    n: Annotated[int, typer.Option(help="Examples to stream through the expert.")] = 256,
    device: Annotated[str, typer.Option(help="cpu, or cuda (refused when absent).")] = "cpu",
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer folder, when EXPERT has none.")] = None,  # noqa: UP007
    overwrite: Annotated[bool, typer.Option(help="Replace an existing statistics folder.")] = False,
) -> None:
    """Measure an expert's Fisher and/or RegMean statistics on its task, for `fisher`/`regmean` merges."""
    with heavy_imports():
        from graftkit.stats import compute_stats, parse_kinds

    result = compute_stats(
        expert,
        out,
        task=task,
        jsonl=jsonl,
        kinds=parse_kinds(kind),
        n=n,
        device=device,
        overwrite=overwrite,
        tokenizer=tokenizer,
        echo=lambda line: typer.echo(line, err=True),
    )
    typer.echo(f"statistics written to {result}")


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Argument(help="Model folder (any Hugging Face causal LM with a tokenizer).")],
    tasks: Annotated[str, typer.Option(help="Comma-separated task names (see `graft tasks`).")],
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    n: Annotated[int, typer.Option(help="Examples per task.")] = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write scores as JSON here.")] = None,  # noqa: UP007
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,  # noqa: UP007
) -> None:
    """Score a model on registered tasks (exact match by greedy decoding)."""
    with heavy_imports():
        from graftkit.evaluate import run_eval

    run_eval(model, [t.strip() for t in tasks.split(",") if t.strip()], split, n, json_out, device=device)


@app.command("tasks")
def list_tasks() -> None:
    """List the registered tasks by kind."""
    from graftkit.zoo.tasks import TASKS

    for name, task in TASKS.items():
        typer.echo(f"{task.kind:9} {name}")


zoo_app = typer.Typer(help="Train the model zoo: bases, experts and multitask baselines.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("build")
def zoo_build(
    size: Annotated[str, typer.Option(help="demo, xs, s, m, l (CPU) or xl, xxl (GPU).")] = "s",
    bases: Annotated[str, typer.Option(help="Comma-separated: pretrained, instruct.")] = "pretrained,instruct",
    families: Annotated[str | None, typer.Option(help="Held-in families (default: all).")] = None,
    multitask: Annotated[bool, typer.Option(help="Also train the multitask baseline of each base.")] = True,
    n: Annotated[int, typer.Option(help="Test examples per task for the score table.")] = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the score table as JSON.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
) -> None:
    """Build (or reuse from the cache) a zoo, then print a model × task score table."""
    from rich.console import Console

    with heavy_imports():
        from graftkit.study import zoo_report
        from graftkit.zoo.build import build_zoo

    console = Console()
    chosen = [f.strip() for f in families.split(",")] if families else None
    kinds = tuple(b.strip() for b in bases.split(",") if b.strip())
    manifest = build_zoo(size, bases=kinds, families=chosen, multitask=multitask, device=device, log=console.print)
    report = zoo_report.score_zoo(manifest, n=n)
    console.print(zoo_report.render(report))
    if json_out:
        zoo_report.save(report, json_out)


@zoo_app.command("import")
def zoo_import(name: Annotated[str, typer.Argument(help="A real pretrained model to import: smollm2.")]) -> None:
    """Import a real pretrained LM into the zoo cache as a safetensors folder, and print its path."""
    from graftkit.zoo.smollm2 import IMPORTS

    importer = IMPORTS.get(name)  # unknown names fail before the heavy imports
    with heavy_imports():
        path = importer(log=lambda msg: typer.echo(msg, err=True))
    typer.echo(str(path))


@app.command()
def demo() -> None:
    """Build tiny models, merge them with several methods and report (no data needed)."""
    with heavy_imports():
        from graftkit.demo import run_demo

    run_demo()


def _register_subcommands() -> None:
    from graftkit.compose.cli import app as compose_app
    from graftkit.inspect_cli import check_command, inspect_command
    from graftkit.study.cli import app as study_app

    app.command("inspect")(inspect_command)
    app.command("check")(check_command)
    app.add_typer(compose_app, name="compose", help="CALM bridges between frozen models: train, generate.")
    app.add_typer(study_app, name="study", help="Reproduce published findings on models trained here.")


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
