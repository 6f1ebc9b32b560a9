"""The stages every task-vector method is built from.

task vectors → sparsify (none / magnitude / DARE / breadcrumbs / DELLA) → elect sign →
combine (weighted sum or disjoint mean) → ×λ → add base. Methods are configurations of these.
"""

from graftkit.methods.stages.combine import (
    Sparsifier,
    combine,
    disjoint_mean,
    elect_sign,
    merge_task_vectors,
    task_vectors,
    weighted_sum,
)
from graftkit.methods.stages.sparsify import (
    above_cutoff,
    breadcrumbs,
    dare,
    della,
    della_probabilities,
    magnitude,
    top_magnitude_mask,
)

__all__ = [
    "Sparsifier",
    "above_cutoff",
    "breadcrumbs",
    "combine",
    "dare",
    "della",
    "della_probabilities",
    "disjoint_mean",
    "elect_sign",
    "magnitude",
    "merge_task_vectors",
    "task_vectors",
    "top_magnitude_mask",
    "weighted_sum",
]
