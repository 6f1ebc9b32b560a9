"""Measure models on registered tasks.

- :mod:`~graftkit.evaluate.generate`: exact match by batched greedy decoding (KV cache, left padding).
- :mod:`~graftkit.evaluate.loglik`: log-likelihood of candidate answers; gold-answer loss.
- :mod:`~graftkit.evaluate.stats`: Wilson intervals and the study's normalised scores.
- :mod:`~graftkit.evaluate.results`: :class:`TaskScore`, JSON and a rich table.
- :mod:`~graftkit.evaluate.runner`: :func:`evaluate_model` and :func:`run_eval` (``graft eval``).
"""

from __future__ import annotations

from graftkit.evaluate.generate import Prediction, exact_match, greedy_generate
from graftkit.evaluate.loglik import Choice, ChoiceScore, continuation_logprobs, gold_loss, score_choices
from graftkit.evaluate.results import TaskScore, load_scores, save_scores, scores_table
from graftkit.evaluate.runner import evaluate_model, load_model, run_eval
from graftkit.evaluate.stats import (
    held_in_normalised,
    held_out_normalised,
    mean_defined,
    normalised,
    wilson_interval,
)

__all__ = [
    "Choice",
    "ChoiceScore",
    "Prediction",
    "TaskScore",
    "continuation_logprobs",
    "evaluate_model",
    "exact_match",
    "gold_loss",
    "greedy_generate",
    "held_in_normalised",
    "held_out_normalised",
    "load_model",
    "load_scores",
    "mean_defined",
    "normalised",
    "run_eval",
    "save_scores",
    "score_choices",
    "scores_table",
    "wilson_interval",
]
