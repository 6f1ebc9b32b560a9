"""Merge a zoo's experts with several methods and score every model on held-in and held-out tasks.

Scores follow the protocol of Yadav et al. 2024 (arXiv 2410.03617): a merged model's held-in score
is its accuracy on each merged task divided by that task's expert accuracy, averaged; its held-out
score is its accuracy divided by the base's. Raw accuracies are kept beside them, because a base
trained from scratch can score 0 on held-out tasks, where that ratio is undefined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MergeSetting:
    """One merged model of a study: a method and its parameters."""

    label: str
    method: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    per_expert: Mapping[str, Any] = field(default_factory=dict)
    dare: Mapping[str, Any] | None = None

    def recipe(self, base: Path, experts: Sequence[Path], seed: int = 0) -> dict[str, Any]:
        recipe: dict[str, Any] = {
            "merge_method": self.method,
            "base_model": str(base),
            "models": [{"model": str(e), "parameters": dict(self.per_expert)} for e in experts],
            "parameters": dict(self.parameters),
            "seed": seed,
        }
        if self.dare:
            recipe["dare"] = dict(self.dare)
        return recipe


# The demo's methods; values are the papers' usual ones for a handful of experts (not tuned).
DEFAULT_SETTINGS = (
    MergeSetting("average", "linear"),
    MergeSetting("task_arithmetic", "task_arithmetic", {"lambda": 0.5}),
    MergeSetting("ties", "ties", {"lambda": 1.0}, {"density": 0.2}),
    MergeSetting("dare_ties", "dare_ties", {"lambda": 1.0}, {"density": 0.3}),
)


def merge_all(
    base: Path, experts: Sequence[Path], settings: Sequence[MergeSetting], out_dir: Path, seed: int = 0
) -> dict[str, Path]:
    """Merge ``experts`` onto ``base`` once per setting into ``out_dir/<label>``."""
    import graftkit

    outputs = {}
    for setting in settings:
        recipe = setting.recipe(base, experts, seed)
        outputs[setting.label] = graftkit.merge(recipe, out_dir / setting.label, overwrite=True, progress=False)
    return outputs


def score_all(
    models: Mapping[str, Path], tasks: Sequence[str], *, split: str = "test", n: int = 100, losses: dict | None = None
) -> dict[str, dict[str, float]]:
    """Exact-match accuracy of each model on each task: ``{label: {task: accuracy}}``.

    When ``losses`` is a dict it is filled with ``{label: {task: gold-answer NLL per token}}``: a
    graded signal where exact match is all-or-nothing.
    """
    from graftkit.evaluate import evaluate_model

    table = {}
    for label, path in models.items():
        scores = evaluate_model(path, tasks, split=split, n=n, with_loss=losses is not None, label=label)
        table[label] = {s.task: s.accuracy for s in scores}
        if losses is not None:
            losses[label] = {s.task: s.loss for s in scores}
    return table


@dataclass(frozen=True)
class Summary:
    """One model's study scores."""

    label: str
    held_in: float  # mean accuracy on the merged (held-in) tasks
    held_out: float  # mean accuracy on the held-out tasks
    held_in_normalised: float | None  # mean of accuracy / expert accuracy
    held_out_normalised: float | None  # mean of accuracy / base accuracy (None where base scores 0)


def summarise(
    scores: Mapping[str, Mapping[str, float]],
    experts_by_task: Mapping[str, str],
    base_label: str,
    held_out: Sequence[str],
) -> list[Summary]:
    """Raw and normalised held-in/held-out scores for every model in ``scores``."""
    held_in = list(experts_by_task)
    rows = []
    for label, by_task in scores.items():
        in_ratios = [_ratio(by_task[t], scores[experts_by_task[t]][t]) for t in held_in]
        out_ratios = [_ratio(by_task[t], scores[base_label][t]) for t in held_out]
        rows.append(
            Summary(
                label,
                _mean([by_task[t] for t in held_in]),
                _mean([by_task[t] for t in held_out]),
                _mean_defined(in_ratios),
                _mean_defined(out_ratios),
            )
        )
    return rows


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None
