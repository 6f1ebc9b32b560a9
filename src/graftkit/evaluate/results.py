"""Per-task results: the :class:`TaskScore` record, its JSON form and a rich table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rich.table import Table

from graftkit.evaluate.stats import wilson_interval

#: Written into every results file; bump when the layout changes.
FORMAT = "graftkit.eval/1"


@dataclass(frozen=True)
class TaskScore:
    """How one model did on one task.

    Attributes:
        task: registered task name.
        n: examples scored.
        correct: examples answered correctly.
        split: the split the examples came from.
        metric: ``"exact_match"`` (greedy decoding) or ``"loglik"`` (multiple choice).
        model: a label for the model (its path, or the name given).
        loss: mean NLL per gold-answer token in nats, if measured.
    """

    task: str
    n: int
    correct: int
    split: str = "test"
    metric: str = "exact_match"
    model: str = ""
    loss: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.correct <= self.n:
            raise ValueError(f"task {self.task!r}: need 0 <= correct <= n, got {self.correct}/{self.n}")

    @property
    def accuracy(self) -> float:
        """``correct / n`` (NaN when nothing was scored)."""
        return self.correct / self.n if self.n else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        """95% Wilson score interval of the accuracy."""
        return wilson_interval(self.correct, self.n)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON; derived ``accuracy`` and ``ci95`` are included for readers."""
        out = asdict(self)
        out["accuracy"] = self.accuracy
        out["ci95"] = list(self.ci95)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskScore:
        """Inverse of :meth:`to_dict` (derived keys are recomputed, not trusted)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def scores_to_json(scores: Sequence[TaskScore], meta: Mapping[str, Any] | None = None) -> str:
    """Serialise scores (and optional run info) to a JSON document."""
    doc = {"format": FORMAT, "meta": dict(meta or {}), "scores": [s.to_dict() for s in scores]}
    return json.dumps(doc, indent=2, allow_nan=True)


def scores_from_json(text: str) -> list[TaskScore]:
    """Parse a document written by :func:`scores_to_json`."""
    doc = json.loads(text)
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a graftkit results document (format {doc.get('format')!r}, want {FORMAT!r})")
    return [TaskScore.from_dict(s) for s in doc["scores"]]


def save_scores(scores: Sequence[TaskScore], path: Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write scores to ``path`` (parents created). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(scores_to_json(scores, meta) + "\n")
    return path


def load_scores(path: Path) -> list[TaskScore]:
    """Read scores written by :func:`save_scores`."""
    return scores_from_json(Path(path).read_text())


def _pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.1f}"


def scores_table(scores: Sequence[TaskScore], title: str | None = None) -> Table:
    """A rich table of scores.

    One model: a row per task with n, correct, accuracy, 95% CI and gold loss. Several
    models: a model × task grid of accuracies with their 95% CI.
    """
    models = list(dict.fromkeys(s.model for s in scores))
    if len(models) <= 1:
        table = Table(title=title or (models[0] if models and models[0] else None))
        for col in ("task", "split", "metric", "n", "correct", "accuracy %", "95% CI", "loss"):
            table.add_column(col, justify="left" if col in ("task", "split", "metric") else "right")
        for s in scores:
            low, high = s.ci95
            loss = "—" if s.loss is None else f"{s.loss:.3f}"
            table.add_row(
                s.task,
                s.split,
                s.metric,
                str(s.n),
                str(s.correct),
                _pct(s.accuracy),
                f"{_pct(low)}–{_pct(high)}",
                loss,
            )
        return table

    tasks = list(dict.fromkeys(s.task for s in scores))
    cell = {(s.model, s.task): s for s in scores}
    table = Table(title=title)
    table.add_column("model")
    for task in tasks:
        table.add_column(task, justify="right")
    for model in models:
        row = [model]
        for task in tasks:
            s = cell.get((model, task))
            if s is None:
                row.append("")
            else:
                low, high = s.ci95
                row.append(f"{_pct(s.accuracy)} ({_pct(low)}–{_pct(high)})")
        table.add_row(*row)
    return table
