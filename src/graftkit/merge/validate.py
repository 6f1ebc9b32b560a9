"""Check a recipe against its method's parameter specs, before any checkpoint is opened.

Produces a :class:`ResolvedRecipe`: the method spec, and every parameter filled with its
default, aliases applied (``drop_rate`` → ``density``), ranges checked.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from graftkit.errors import RecipeError, UnknownNameError
from graftkit.merge.compat import translate
from graftkit.merge.params import scalars_in
from graftkit.merge.recipe import FilterValue, Recipe, StatsRequest
from graftkit.merge.stack_recipe import LayerStack, resolve_stack
from graftkit.methods import METHODS
from graftkit.methods.spec import WEIGHT, MethodSpec, ParamSpec


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe whose parameters are complete and valid for its method.

    Attributes:
        recipe: the parsed recipe (with the base removed from ``models`` where mergekit does so).
        spec: the merge method.
        global_params: every global parameter → value (scalar, per-layer list or filters).
        expert_params: per expert, ``weight`` and every per-expert parameter → value.
        stack: for a ``slices:`` recipe, its layer stack; expert k is then slice k's source
            (``recipe.models`` holds one derived entry per slice).
    """

    recipe: Recipe
    spec: MethodSpec
    global_params: dict[str, Any]
    expert_params: list[dict[str, Any]]
    stack: LayerStack | None = None

    @property
    def expert_paths(self) -> list[str]:
        return self.recipe.model_paths()


def resolve_recipe(recipe: Recipe) -> ResolvedRecipe:
    """Validate ``recipe`` against its method; raise :class:`RecipeError` listing every problem."""
    try:
        spec = METHODS.get(recipe.merge_method)
    except UnknownNameError as err:
        raise RecipeError(f"`merge_method`: {err}") from None
    stack = None
    if recipe.slices:
        recipe, stack = resolve_stack(recipe)
    recipe = _drop_base_from_models(recipe, spec)
    problems: list[str] = []
    places = [
        f"{LayerStack.place(i)}.parameters" if stack else f"models[{i}].parameters" for i in range(len(recipe.models))
    ]
    global_params = _apply_alias(dict(recipe.parameters), "parameters", problems)
    experts = [
        _apply_alias(dict(m.parameters), place, problems) for m, place in zip(recipe.models, places, strict=True)
    ]
    translate(spec, global_params, experts, problems)
    _check_structure(recipe, spec, problems, stacked=stack is not None)
    _check_stats(recipe, spec, problems)
    known = {p.name: p for p in (WEIGHT, *spec.params)}
    _check_names(global_params, "parameters", known, spec, problems, per_expert_place=False)
    for params, place in zip(experts, places, strict=True):
        _check_names(params, place, known, spec, problems, per_expert_place=True)
    resolved_global = {p.name: global_params.get(p.name, p.default) for p in spec.params if not p.per_expert}
    resolved_experts = [
        {p.name: params.get(p.name, global_params.get(p.name, p.default)) for p in known.values() if p.per_expert}
        for params in experts
    ]
    _check_weight_sum(spec, resolved_global, resolved_experts, problems)
    if not problems:  # cross-parameter rules assume each value is already well-typed and in range
        _check_combined(spec, resolved_global, resolved_experts, problems)
        _check_model_scope(recipe, resolved_global, resolved_experts, problems)
    if problems:
        raise RecipeError(f"The recipe for `{spec.name}` has errors:\n" + "\n".join(problems))
    return ResolvedRecipe(recipe, spec, resolved_global, resolved_experts, stack)


def _drop_base_from_models(recipe: Recipe, spec: MethodSpec) -> Recipe:
    """mergekit lists the base among `models` for task-vector methods; it is not an expert there."""
    if recipe.base_model is None:
        return recipe
    if spec.needs_base:
        models = [m for m in recipe.models if m.model != recipe.base_model]
        return recipe.model_copy(update={"models": models}) if models else recipe
    if spec.name == "slerp":  # mergekit: base_model is the t=0 end
        ordered = sorted(recipe.models, key=lambda m: m.model != recipe.base_model)
        return recipe.model_copy(update={"models": ordered})
    return recipe


def _apply_alias(params: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    if "drop_rate" not in params:
        return params
    if "density" in params:
        problems.append(f"- `{where}`: give either `density` or `drop_rate` (= 1 − density), not both.")
        return params
    rate = params.pop("drop_rate")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        params["density"] = 1.0 - float(rate)
    elif isinstance(rate, list) and all(isinstance(v, (int, float)) for v in rate):
        params["density"] = [1.0 - float(v) for v in rate]
    else:
        problems.append(f"- `{where}.drop_rate`: must be a number in [0, 1) or a per-layer list of them.")
    return params


def _check_structure(recipe: Recipe, spec: MethodSpec, problems: list[str], *, stacked: bool = False) -> None:
    """Base, DARE and model-count rules (a layer stack takes one model per slice, any number of slices)."""
    n = 1 if stacked else len(recipe.models)
    if spec.needs_base and recipe.base_model is None:
        problems.append(f"- `base_model`: `{spec.name}` combines task vectors (expert − base); name the base model.")
    if recipe.dare is not None:
        if not spec.accepts_dare:
            problems.append(f"- `dare`: the DARE pre-step cannot be combined with `{spec.name}`; remove `dare:`.")
        elif recipe.base_model is None:
            why = (
                ""
                if spec.needs_base
                else f" (`{spec.name}` itself needs none; it then merges base + DARE(expert − base))"
            )
            problems.append(f"- `dare`: the DARE pre-step drops entries of expert − base; name a `base_model`{why}.")
    if recipe.on_missing == "base" and recipe.base_model is None:
        problems.append(
            "- `on_missing: base` fills missing tensors from the base model, but the recipe has no "
            "`base_model`; name one or use `on_missing: skip`."
        )
    if n < spec.min_models:
        amount = "exactly" if spec.max_models == spec.min_models else "at least"
        problems.append(f"- `models`: `{spec.name}` needs {amount} {spec.min_models} model(s), got {n}.")
    if spec.max_models is not None and n > spec.max_models:
        exact = "exactly" if spec.max_models == spec.min_models else "at most"
        problems.append(f"- `models`: `{spec.name}` takes {exact} {spec.max_models} models, got {n}.")


def _check_stats(recipe: Recipe, spec: MethodSpec, problems: list[str]) -> None:
    """Data-aware methods need every model's statistics (a folder, or a request to compute them)."""
    for i, entry in enumerate(recipe.models):
        where = f"models[{i}].stats"
        if spec.needs_stats is None:
            if entry.stats is not None:
                problems.append(f"- `{where}`: `{spec.name}` uses no statistics; remove `stats:` from {entry.model}.")
            continue
        if entry.stats is None:
            kind = spec.needs_stats
            problems.append(
                f"- `{where}`: `{spec.name}` weighs each model by its {kind} statistics, and {entry.model} has none. "
                f"Add `stats: DIR` (written by `graft stats {entry.model} --kind {kind} --task TASK -o DIR`), or "
                "`stats: {task: TASK, n: 256}` to compute them before the merge."
            )
        elif isinstance(entry.stats, StatsRequest):
            from graftkit.stats.data import source_problem

            why = source_problem(entry.stats.task, entry.stats.jsonl)
            if why:
                problems.append(f"- `{where}`: {why}.")


def _check_names(
    params: dict[str, Any],
    where: str,
    known: dict[str, ParamSpec],
    spec: MethodSpec,
    problems: list[str],
    *,
    per_expert_place: bool,
) -> None:
    for name, value in params.items():
        param = known.get(name)
        if param is None:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            valid = ", ".join(sorted(known))
            problems.append(f"- `{where}.{name}`: `{spec.name}` has no parameter `{name}`.{hint} Valid: {valid}.")
            continue
        if per_expert_place and not param.per_expert:
            problems.append(
                f"- `{where}.{name}`: `{name}` is global for `{spec.name}`; move it to top-level `parameters:`."
            )
            continue
        _check_value(param, value, f"{where}.{name}", problems)


def _check_value(param: ParamSpec, value: Any, where: str, problems: list[str]) -> None:
    structured = isinstance(value, list)
    if structured and param.type not in (int, float):
        problems.append(f"- `{where}`: must be a single value, not a list.")
        return
    if structured and not value:
        problems.append(f"- `{where}`: an empty list; give a number or a non-empty list.")
        return
    if structured and isinstance(value[0], FilterValue) and not all(isinstance(v, FilterValue) for v in value):
        problems.append(f"- `{where}`: mixes numbers and {{filter, value}} entries; use one form.")
        return
    for scalar in scalars_in(value):
        if isinstance(scalar, float) and scalar in (math.inf, -math.inf):
            problems.append(f"- `{where}`: must be a finite number, got {scalar}.")
            return
        why = param.check(scalar)
        if why:
            problems.append(f"- `{where}`: {why}.")
            return


def _check_weight_sum(
    spec: MethodSpec, global_params: dict[str, Any], experts: list[dict[str, Any]], problems: list[str]
) -> None:
    if not spec.normalizes_weights(global_params):
        return
    weights = [e.get("weight", 1.0) for e in experts]
    if all(isinstance(w, (int, float)) for w in weights) and abs(sum(weights)) < 1e-12:
        problems.append(
            f"- `models[*].parameters.weight`: the weights sum to 0 but `{spec.name}` divides by their sum; "
            "change a weight or set `normalize: false`."
        )


def _check_combined(
    spec: MethodSpec, global_params: dict[str, Any], experts: list[dict[str, Any]], problems: list[str]
) -> None:
    """Rules that tie two parameters together (e.g. DELLA's density ± epsilon in (0, 1))."""
    scalar_globals = {k: v for k, v in global_params.items() if not isinstance(v, list)}
    for i, params in enumerate(experts):
        merged = {
            **scalar_globals,
            **{k: v for k, v in params.items() if not isinstance(v, list) and k != "weight"},
        }
        why = spec.check_params(merged)
        if why:
            problems.append(f"- `models[{i}].parameters`: {why}.")
            return


def _check_model_scope(
    recipe: Recipe, global_params: dict[str, Any], experts: list[dict[str, Any]], problems: list[str]
) -> None:
    """``trim_scope: model`` ranks each expert once over the whole model: one density per expert, no DARE."""
    if global_params.get("trim_scope") != "model":
        return
    if recipe.dare is not None:
        problems.append("- `dare`: cannot be combined with `trim_scope: model`; remove one of them.")
    for i, params in enumerate(experts):
        if not isinstance(params.get("density"), (int, float)):
            problems.append(
                f"- `models[{i}].parameters.density`: `trim_scope: model` keeps one fraction of the expert's "
                "whole model, so density must be a single number here, not per-layer values or filters."
            )
