"""Score a built zoo: every base, expert and multitask model on held-in and held-out tasks."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def zoo_models(manifest: Any) -> dict[str, Path]:
    """``{label: folder}`` for every model of a :class:`~graftkit.zoo.build.ZooManifest`."""
    models: dict[str, Path] = {}
    for kind, base in manifest.bases.items():
        models[f"{kind}"] = base
        for family, path in manifest.experts.get(kind, {}).items():
            models[f"{kind}/expert:{family}"] = path
        if kind in manifest.multitask:
            models[f"{kind}/multitask"] = manifest.multitask[kind]
    return models


def score_zoo(manifest: Any, *, n: int = 200, split: str = "test", held_out: Sequence[str] | None = None) -> dict:
    """Accuracy of every zoo model on the held-in families it was built with and the held-out tasks."""
    from graftkit.study.merge_eval import score_all
    from graftkit.zoo.tasks import tasks_of_kind

    families = sorted({f for experts in manifest.experts.values() for f in experts})
    held_out = list(held_out if held_out is not None else tasks_of_kind("held_out"))
    start = time.perf_counter()
    models = zoo_models(manifest)
    scores = score_all(models, [*families, *held_out], split=split, n=n)
    return {
        "size": manifest.size,
        "held_in": families,
        "held_out": held_out,
        "n": n,
        "split": split,
        "scores": scores,
        "train_seconds": {label: training_seconds(folder) for label, folder in models.items()},
        "eval_seconds": round(time.perf_counter() - start, 1),
    }


def training_seconds(folder: Path) -> float | None:
    """How long a zoo model's own training stage took (from its ``training.json``), if recorded."""
    info = Path(folder) / "training.json"
    if not info.is_file():
        return None
    seconds = json.loads(info.read_text()).get("seconds")
    return round(seconds, 1) if seconds is not None else None


def render(report: dict) -> Any:
    """A rich table: one row per model, one column per task."""
    from rich.table import Table

    table = Table(title=f"zoo '{report['size']}': exact match on {report['split']} (n={report['n']} per task)")
    table.add_column("model")
    tasks = [*report["held_in"], *report["held_out"]]
    for task in tasks:
        table.add_column(task + ("" if task in report["held_in"] else "*"), justify="right")
    table.add_column("train s", justify="right")
    seconds = report.get("train_seconds", {})
    for label, by_task in report["scores"].items():
        took = seconds.get(label)
        table.add_row(label, *[f"{by_task[t]:.2f}" for t in tasks], "" if took is None else f"{took:.0f}")
    table.caption = "* held-out: no expert trained on it; train s: the model's own training stage"
    return table


def markdown(report: dict) -> str:
    """The score table as markdown: one row per model, one column per task, then training time."""
    tasks = [*report["held_in"], *report["held_out"]]
    head = ["model", *[t if t in report["held_in"] else f"{t}*" for t in tasks], "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    seconds = report.get("train_seconds", {})
    for label, by_task in report["scores"].items():
        took = seconds.get(label)
        cells = [f"{by_task[t]:.2f}" for t in tasks] + ["" if took is None else f"{took:.0f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
