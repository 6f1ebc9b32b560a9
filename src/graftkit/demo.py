"""`make demo`: train (or reuse) a small zoo, merge 4 experts 4 ways, score, print and plot.

Everything is built here from the project's own synthetic tasks; the zoo is cached under
``$GRAFTKIT_CACHE`` (default ``~/.cache/graftkit``), so a second run only merges and evaluates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_FAMILIES = ("addition", "reversal", "case_swap", "letter_double")
DEMO_SIZE = "demo"
DEMO_BASE = "pretrained"


def run_demo(workdir: Path = Path("runs/demo"), *, n: int = 100) -> Path:
    """Run the demo; returns the folder with ``scores.json`` and ``methods.png``."""
    import torch
    from rich.console import Console

    from graftkit.study.merge_eval import DEFAULT_SETTINGS, merge_all, score_all, summarise
    from graftkit.study.plots import plot_methods
    from graftkit.zoo.build import build_zoo
    from graftkit.zoo.tasks import tasks_of_kind

    torch.set_num_threads(1)  # tiny models: one thread is as fast and leaves a core for the rest
    console = Console()
    start = time.perf_counter()
    console.print(
        f"[bold]1/4[/] zoo: one {DEMO_BASE} base ({DEMO_SIZE} preset) and experts on {', '.join(DEMO_FAMILIES)}"
    )
    zoo = build_zoo(DEMO_SIZE, bases=(DEMO_BASE,), families=DEMO_FAMILIES, multitask=False, log=console.print)
    base = zoo.bases[DEMO_BASE]
    experts = {family: zoo.experts[DEMO_BASE][family] for family in DEMO_FAMILIES}
    console.print(f"[bold]2/4[/] merging the {len(experts)} experts: " + ", ".join(s.label for s in DEFAULT_SETTINGS))
    merged = merge_all(base, list(experts.values()), DEFAULT_SETTINGS, workdir / "merged")
    held_out = tasks_of_kind("held_out")
    models = {"base": base, **{f"expert:{f}": p for f, p in experts.items()}, **merged}
    console.print(
        f"[bold]3/4[/] scoring {len(models)} models on {len(DEMO_FAMILIES)} held-in and "
        f"{len(held_out)} held-out tasks (n={n} each)"
    )
    losses: dict = {}
    scores = score_all(models, [*DEMO_FAMILIES, *held_out], n=n, losses=losses)
    rows = summarise(scores, {f: f"expert:{f}" for f in DEMO_FAMILIES}, "base", held_out)
    console.print("[bold]4/4[/] results")
    console.print(_table(scores, rows, DEMO_FAMILIES, held_out, losses))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "scores.json").write_text(
        json.dumps({"scores": scores, "gold_loss": losses, "summary": [r.__dict__ for r in rows]}, indent=2)
    )
    plot = plot_methods(
        rows, workdir / "methods.png", f"{len(experts)} experts merged ({DEMO_SIZE} zoo, {DEMO_BASE} base)"
    )
    console.print(f"plot: {plot}   scores: {workdir / 'scores.json'}   ({time.perf_counter() - start:.0f} s)")
    return workdir


def _table(scores, rows, held_in, held_out, losses):
    """Two narrow tables: accuracy per task (tasks as rows), then the summary per model."""
    from rich.console import Group
    from rich.table import Table

    merged = [label for label in scores if label != "base" and not label.startswith("expert:")]
    per_task = Table(title="exact-match accuracy per task (test split)")
    for column in ("task", "base", "expert", *merged):
        per_task.add_column(column, justify="left" if column == "task" else "right")
    for task in (*held_in, *held_out):
        expert = f"{scores[f'expert:{task}'][task]:.2f}" if task in held_in else "-"
        name = task if task in held_in else f"{task}*"
        per_task.add_row(name, f"{scores['base'][task]:.2f}", expert, *[f"{scores[m][task]:.2f}" for m in merged])
    per_task.caption = "* held-out: no expert trained on it"
    summary = Table(title="summary: mean accuracy; held-in normalised by each task's expert")
    for column in ("model", "held-in", "held-out", "held-in / expert", "held-in loss"):
        summary.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        norm = "-" if row.held_in_normalised is None else f"{row.held_in_normalised:.2f}"
        loss = sum(losses[row.label][t] for t in held_in) / len(held_in)
        summary.add_row(row.label, f"{row.held_in:.2f}", f"{row.held_out:.2f}", norm, f"{loss:.2f}")
    summary.caption = "held-in loss: mean NLL per gold-answer token (nats) on the merged tasks; lower is better"
    return Group(per_task, summary)
