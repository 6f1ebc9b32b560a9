"""``graft study``: experiment commands, each a thin wrapper over a library function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Reproduce paper experiments on the zoo's models.", no_args_is_help=True)


@app.callback()
def study() -> None:
    """Reproduce paper experiments on the zoo's models."""


Overrides = Annotated[list[str] | None, typer.Argument(help="key=value settings, e.g. bridge.steps=800")]
Quick = Annotated[bool, typer.Option(help="Tiny settings (seconds): checks the pipeline, not the science.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the raw result as JSON.")]
Backend = Annotated[str, typer.Option(help="local, or ray (needs the ray extra; starts Ray here unless --address).")]
Address = Annotated[str | None, typer.Option(help="Ray cluster address (default: start Ray here).")]


def _runner(backend: str, address: str | None) -> Any:
    """The study engine's backend named ``backend`` (Ray at ``address`` when given)."""
    from graftkit.study.engine import get_backend

    return get_backend(backend, **({"address": address} if backend == "ray" else {}))


Parts = tuple[Callable[..., Any], Callable[..., Any], Callable[[Any], Any], Callable[[Any, Path], Any]]
"""A CALM study's library functions: load settings (quick, overrides), run, render the result, save it."""


def _calm_command(parts: Callable[[], Parts], doc: str) -> Callable[..., None]:
    """A ``graft study`` command over one CALM study's library functions (imported only when it runs)."""

    def command(
        overrides: Overrides = None,
        quick: Quick = False,
        json_out: JsonOut = None,
        backend: Backend = "local",
        address: Address = None,
    ) -> None:
        from rich.console import Console

        load, run, render, save = parts()
        console = Console()
        settings = load(quick, tuple(overrides or ()))  # validated before any model is touched
        result = run(settings, backend=_runner(backend, address), log=console.print)
        console.print(render(result))
        if json_out:
            save(result, json_out)

    command.__doc__ = doc
    return command


def _calm_kv() -> Parts:
    from graftkit.study.calm_kv import load_settings, run_study
    from graftkit.study.calm_kv_report import render, save_json

    return load_settings, run_study, render, save_json


def _calm_lang() -> Parts:
    from graftkit.study.calm_lang import run_lang_study
    from graftkit.study.calm_lang_report import render, write_report
    from graftkit.study.calm_lang_settings import load_lang_settings

    return load_lang_settings, run_lang_study, render, write_report


app.command("calm-kv")(
    _calm_command(
        _calm_kv, "CALM key-value arithmetic (Bansal et al. 2024, Table 1 + ablations): train or reuse, score, print."
    )
)
app.command("calm-lang")(
    _calm_command(
        _calm_lang, "CALM on a synthetic language (Bansal et al. 2024, §4.2 in spirit): word problems m_B cannot read."
    )
)


StudyFile = Annotated[Path | None, typer.Argument(help="Study file (YAML); default: the SmolLM2 study.")]
Out = Annotated[Path, typer.Option("-o", "--out", help="Folder for the JSON, rows, figures and report.")]


def _run_file_study(
    module: str, loader: str, study_file: Path | None, out: Path, backend: str, address: str | None
) -> None:
    """Load and validate the study file (before any model is touched), run it, write and print its report."""
    import importlib

    from rich.console import Console

    study = getattr(importlib.import_module(f"{module}_settings"), loader)(study_file)
    console = Console()
    result = importlib.import_module(module).run_study(study, backend=_runner(backend, address), log=console.print)
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
