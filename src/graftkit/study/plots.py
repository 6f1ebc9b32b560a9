"""Figures of a study (matplotlib, imported only when a figure is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
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
