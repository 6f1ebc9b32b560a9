"""LoRA out: `graft extract-lora` and `graft merge --as-lora`, over :mod:`graftkit.io.lora_extract`.

``--as-lora`` merges into a temporary folder beside the output, factorises the merge's difference
from the recipe's base, and keeps only the adapter (itself built in a temporary folder and renamed
into place); the temporary merge is removed whatever happens.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import mean

from graftkit.errors import GraftError, OutputExistsError, RecipeError
from graftkit.io.lora_extract import ExtractReport, extract_lora
from graftkit.merge.preflight import check_output_path
from graftkit.merge.recipe import Recipe
from graftkit.merge.run import MergeOptions, run_merge


def extract(
    model: Path,
    base: Path,
    rank: int,
    out: Path,
    *,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> ExtractReport:
    """`graft extract-lora`: ``model − base`` as a rank-``rank`` PEFT adapter at ``out``."""
    _check_out(out, [model, base], overwrite)
    with _progress(progress) as advance:
        return extract_lora(model, base, rank, out, overwrite=overwrite, device=device, on_tensor=advance)


def merge_as_lora(recipe: Recipe, out: Path, rank: int, options: MergeOptions) -> ExtractReport:
    """Merge ``recipe``, then keep only its difference from ``base_model`` as a PEFT adapter at ``out``."""
    if recipe.base_model is None:
        raise RecipeError("--as-lora: the adapter is the merge's difference from `base_model`; name a base_model.")
    if options.format != "safetensors" or options.resume:
        raise GraftError(
            "--as-lora writes a PEFT adapter folder; it cannot be combined with --format gguf or --resume."
        )
    _check_out(out, [recipe.base_model, *recipe.model_paths()], options.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.graft-as-lora-", dir=out.parent))
    try:
        merged = run_merge(recipe, work / "merged", options.model_copy(update={"overwrite": False}))
        with _progress(options.progress) as advance:
            return extract_lora(
                merged,
                recipe.base_model,
                rank,
                out,
                overwrite=options.overwrite,
                device=options.device,
                copy_in=[merged / "graft_recipe.yaml"],
                on_tensor=advance,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_out(out: Path, inputs: list, overwrite: bool) -> None:
    check_output_path(out, inputs)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"Output {str(out)!r} already exists; pass --overwrite to replace it.")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None]]:
    if not enabled or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]factorising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("svd", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def render_report(report: ExtractReport) -> None:
    """A table per module kind (rank, mean and max ‖Δ − BA‖_F/‖Δ‖_F), then what was left out."""
    from rich.console import Console
    from rich.table import Table

    groups: dict[str, list] = {}
    for t in report.tensors:
        groups.setdefault(t.name.removesuffix(".weight").rsplit(".", 1)[-1], []).append(t)
    table = Table(title=f"LoRA rank {report.rank}: relative error ‖Δ − BA‖_F / ‖Δ‖_F")
    for column in ("module", "tensors", "rank", "mean error", "max error"):
        table.add_column(column, justify="left" if column == "module" else "right")
    for kind, rows in groups.items():
        ranks = sorted({t.rank for t in rows})
        errors = [t.rel_error for t in rows]
        rank = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}–{ranks[-1]}"
        table.add_row(kind, str(len(rows)), rank, f"{mean(errors):.3e}", f"{max(errors):.3e}")
    console = Console()
    console.print(table)
    console.print(
        f"{len(report.tensors)} tensors factorised, {report.unchanged} unchanged, {len(report.skipped)} skipped"
    )
    for skip in report.skipped[:10]:
        console.print(f"  skipped {skip['name']}: {skip['reason']} (changed by {skip['rel_change']:.2e} of its norm)")
    if len(report.skipped) > 10:
        console.print(f"  … and {len(report.skipped) - 10} more (see lora_extract.json)")
