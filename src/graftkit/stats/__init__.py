"""Per-expert statistics for data-aware merges (``fisher``, ``regmean``): the ``graft stats`` pass.

:mod:`graftkit.stats.collect` measures (pure torch), :mod:`graftkit.stats.data` picks the
examples, :mod:`graftkit.stats.run` ties them to files.
"""

from graftkit.stats.collect import KINDS, Measured, answer_loglik, collect, linear_input_grams
from graftkit.stats.run import DEFAULT_N, compute_stats, parse_kinds

__all__ = [
    "DEFAULT_N",
    "KINDS",
    "Measured",
    "answer_loglik",
    "collect",
    "compute_stats",
    "linear_input_grams",
    "parse_kinds",
]
