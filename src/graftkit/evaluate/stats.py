"""Confidence intervals and the study's normalised scores.

Normalisation follows Yadav et al. 2024 ("What Matters for Model Merging at Scale?",
arXiv 2410.03617): a merged model's score on a held-in task is divided by the score of that
task's expert, and on a held-out task by the score of the base model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: Two-sided 95% standard normal quantile.
Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0% or 100%.

    Returns:
        ``(low, high)``; ``(0.0, 1.0)`` when ``n == 0`` (nothing is known).
    """
    if not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def normalised(score: float, reference: float) -> float | None:
    """``score / reference``, or None when the reference is 0 (the ratio is undefined).

    A None is reported, not replaced: a task whose expert (or base) never succeeds carries no
    information about how much of its skill survived the merge. Averages skip it and say so
    (see :func:`mean_defined`).
    """
    if reference == 0 or math.isnan(reference) or math.isnan(score):
        return None
    return score / reference


def held_in_normalised(merged: Mapping[str, float], experts: Mapping[str, float]) -> dict[str, float | None]:
    """Per held-in task: merged accuracy ÷ the accuracy of that task's expert.

    Args:
        merged: task name → the merged model's accuracy.
        experts: task name → the accuracy of the expert fine-tuned on that task.
    """
    return {task: normalised(score, _reference(experts, task, "expert")) for task, score in merged.items()}


def held_out_normalised(merged: Mapping[str, float], base: Mapping[str, float]) -> dict[str, float | None]:
    """Per held-out task: merged accuracy ÷ the base model's accuracy on it."""
    return {task: normalised(score, _reference(base, task, "base")) for task, score in merged.items()}


def mean_defined(values: Iterable[float | None]) -> tuple[float | None, int]:
    """Mean over the defined values.

    Returns:
        ``(mean or None if no value is defined, number of None values skipped)``.
    """
    values = list(values)
    defined = [v for v in values if v is not None]
    skipped = len(values) - len(defined)
    return (sum(defined) / len(defined) if defined else None), skipped


def _reference(scores: Mapping[str, float], task: str, what: str) -> float:
    try:
        return scores[task]
    except KeyError:
        raise KeyError(f"no {what} score for task {task!r}; have {sorted(scores)}") from None
