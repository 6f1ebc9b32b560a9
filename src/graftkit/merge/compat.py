"""mergekit parameters that graftkit spells differently, translated before validation.

mergekit configs for the methods both tools have run unchanged: parameters that mean the same
thing are mapped to graftkit's, and those whose mergekit meaning graftkit does not implement are
errors that say so (never silently ignored). Every mapping is listed in ``docs/recipes.md``.
"""

from __future__ import annotations

from typing import Any

from graftkit.methods.spec import MethodSpec

# Methods whose combine step is TIES' disjoint mean (already normalised by the agreeing weights).
DISJOINT_MEAN = {"ties", "dare_ties", "breadcrumbs_ties", "della"}
# Methods whose combine step is a weighted sum of task vectors.
WEIGHTED_SUM = {"task_arithmetic", "dare_linear", "magnitude_prune", "breadcrumbs", "della_linear"}
RESCALE_METHODS = {"dare_linear", "dare_ties", "magnitude_prune"}


def translate(
    spec: MethodSpec, global_params: dict[str, Any], experts: list[dict[str, Any]], problems: list[str]
) -> None:
    """Rewrite mergekit-only parameters in place (global and per-expert), appending problems."""
    for where, params in [("parameters", global_params)] + [
        (f"models[{i}].parameters", p) for i, p in enumerate(experts)
    ]:
        _rescale(spec, params, where, problems)
        _filter_wise(spec, params, where, problems)
    if spec.name in DISJOINT_MEAN | WEIGHTED_SUM:
        _normalize(spec, global_params, experts, problems)


def _rescale(spec: MethodSpec, params: dict[str, Any], where: str, problems: list[str]) -> None:
    value = params.get("rescale")
    if isinstance(value, bool) and spec.name in RESCALE_METHODS:
        # mergekit's boolean: true rescales kept entries, false does not. graftkit's "paper"
        # rescale is 1/density (the DARE paper), not mergekit's norm-matching; see docs/recipes.md.
        params["rescale"] = "paper" if value else "none"


def _filter_wise(spec: MethodSpec, params: dict[str, Any], where: str, problems: list[str]) -> None:
    if spec.name != "model_stock" or "filter_wise" not in params:
        return
    if params.pop("filter_wise") is not False:
        problems.append(f"- `{where}.filter_wise`: graftkit's model_stock is tensor-wise only; remove it or set false.")


def _normalize(
    spec: MethodSpec, global_params: dict[str, Any], experts: list[dict[str, Any]], problems: list[str]
) -> None:
    value = global_params.pop("normalize", None)
    for params in experts:
        value = params.pop("normalize", value)
    if value is None:
        return
    if spec.name in DISJOINT_MEAN:
        if value is not True:
            problems.append(
                f"- `parameters.normalize`: `{spec.name}` always takes the disjoint mean (normalize: true); "
                "an unnormalised disjoint sum is not implemented. Remove `normalize` or set it to true."
            )
        return
    if value is True:  # weighted sum divided by Σw: scale every weight by 1/Σw
        weights = [p.get("weight", 1.0) for p in experts]
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights) or sum(weights) == 0:
            problems.append(
                f"- `parameters.normalize`: with `{spec.name}`, normalize: true needs plain numeric weights "
                "with a non-zero sum; give numbers or drop normalize."
            )
            return
        total = float(sum(weights))
        for params, weight in zip(experts, weights, strict=True):
            params["weight"] = weight / total
