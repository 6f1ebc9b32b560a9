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
    backend: Annotated[str, typer.Option(help="local, or ray (needs the ray extra; ray.init() locally).")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start Ray here).")] = None,
) -> None:
    """CALM key-value arithmetic (Bansal et al. 2024, Table 1 + ablations): train or reuse, score, print."""
    from rich.console import Console

    from graftkit.study.calm_kv import load_settings, run_study
    from graftkit.study.calm_kv_report import render, save_json
    from graftkit.study.engine import get_backend

    console = Console()
    settings = load_settings(quick=quick, overrides=tuple(overrides or ()))  # validated before any model is touched
    runner = get_backend(backend, **({"address": address} if backend == "ray" else {}))
    result = run_study(settings, backend=runner, log=console.print)
    console.print(render(result))
    if json_out:
        save_json(result, json_out)


StudyFile = Annotated[Path | None, typer.Argument(help="Study file (YAML); default: the SmolLM2 study.")]
Backend = Annotated[str, typer.Option(help="local, or ray (needs the ray extra; starts Ray here unless --address).")]
Address = Annotated[str | None, typer.Option(help="Ray cluster address (default: start Ray here).")]
Out = Annotated[Path, typer.Option("-o", "--out", help="Folder for the JSON, rows, figures and report.")]


def _run_file_study(
    module: str, loader: str, study_file: Path | None, out: Path, backend: str, address: str | None
) -> None:
    """Load and validate the study file (before any model is touched), run it, write and print its report."""
    import importlib

    from rich.console import Console

    from graftkit.study.engine import get_backend

    study = getattr(importlib.import_module(f"{module}_settings"), loader)(study_file)
    console = Console()
    runner = get_backend(backend, **({"address": address} if backend == "ray" else {}))
    result = importlib.import_module(module).run_study(study, backend=runner, log=console.print)
    paths = importlib.import_module(f"{module}_report").write_outputs(result, out, name=study.name)
    console.print(paths["md"].read_text())
    console.print("written: " + ", ".join(str(p) for p in paths.values()))


@app.command("merge-scale")
def merge_scale(
    study_file: StudyFile = None,
    out: Out = Path("runs/merge_scale"),
    backend: Backend = "local",
    address: Address = None,
) -> None:
    """Merging at scale (Yadav et al. 2024): experts, hyperparameters on validation, 2-8 experts merged."""
    _run_file_study("graftkit.study.merge_scale", "load_study", study_file, out, backend, address)


@app.command("dare")
def dare(
    study_file: StudyFile = None,
    out: Out = Path("runs/dare"),
    backend: Backend = "local",
    address: Address = None,
) -> None:
    """DARE's claims (Yu et al. 2023): drop-rate sweep, DARE vs magnitude, pre-step table, far-moved expert."""
    _run_file_study("graftkit.study.dare", "load_dare_study", study_file, out, backend, address)


@app.command("merge-scale-combine")
def merge_scale_combine(
    raws: Annotated[list[Path], typer.Argument(help="<name>_raw.json files of merge-scale runs with one grid.")],
    out: Out = Path("docs/results"),
    name: Annotated[str, typer.Option(help="Name of the combined outputs.")] = "merge_scale",
) -> None:
    """One merge-scale report over several runs (e.g. the SmolLM2 and the zoo study files); runs nothing."""
    import json

    from graftkit.study.merge_scale_report import combine_results, write_outputs

    result = combine_results([json.loads(p.read_text()) for p in raws])
    paths = write_outputs(result, out, name=name)
    typer.echo("written: " + ", ".join(str(p) for p in paths.values()))
