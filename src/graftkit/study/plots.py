"""Figures of a study (matplotlib, imported only when a figure is drawn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from graftkit.study.merge_eval import Summary


def plot_methods(rows: Sequence[Summary], path: Path, title: str) -> Path:
    """Grouped bars: held-in and held-out accuracy per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 3.6))
    ax.bar([x - 0.2 for x in xs], [r.held_in for r in rows], width=0.4, label="held-in (merged tasks)")
    ax.bar([x + 0.2 for x in xs], [r.held_out for r in rows], width=0.4, label="held-out (unseen tasks)")
    ax.set_xticks(list(xs), labels, rotation=20, ha="right")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_scores(scores: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Grouped bars: one group per model, one bar per task (accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(scores)
    tasks = list(dict.fromkeys(t for by_task in scores.values() for t in by_task))
    width = 0.8 / max(1, len(tasks))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models)), 3.8))
    for i, task in enumerate(tasks):
        xs = [m + (i - (len(tasks) - 1) / 2) * width for m in range(len(models))]
        ax.bar(xs, [scores[m].get(task, 0.0) for m in models], width=width, label=task)
    ax.set_xticks(range(len(models)), [m.replace("expert:chat_", "expert:") for m in models], rotation=20, ha="right")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
