"""Merge methods: pure functions on tensors, registered in :data:`METHODS`.

Importing this package registers every method; the list below is explicit so that what is
registered never depends on which files happen to exist.
"""

from graftkit.methods import (  # noqa: F401  (imported to register)
    breadcrumbs,
    dare,
    della,
    fisher,
    linear,
    model_stock,
    passthrough,
    regmean,
    slerp,
    task_arithmetic,
    ties,
)
from graftkit.methods.apply import resolve_params, run_method
from graftkit.methods.rng import expert_seed
from graftkit.methods.spec import METHODS, WEIGHT, MethodSpec, ParamSpec

__all__ = ["METHODS", "WEIGHT", "MethodSpec", "ParamSpec", "expert_seed", "resolve_params", "run_method"]
