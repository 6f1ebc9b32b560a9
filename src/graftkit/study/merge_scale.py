"""The merge-scale study (Yadav et al. 2024, "What Matters for Model Merging at Scale?", arXiv 2410.03617).

For each base of the study file: fine-tune one expert per held-in family and a multitask baseline;
score the base, the experts and the baseline; for each method and number of experts, choose the
hyperparameters on the validation split (held-in tasks of one seed's subset, from a stated grid),
then merge each seed's random subset of experts with them and score it on the test split. Every
step is an engine unit (:mod:`graftkit.study.model_units`), cached by content and resumable, run
by the local or the Ray backend.

Normalisation is the paper's (:mod:`graftkit.evaluate.stats`): held-in = merged accuracy on each
merged task ÷ that task's expert accuracy, averaged over the merged tasks; held-out = merged
accuracy ÷ the base's, averaged over the held-out tasks. A task whose reference scores 0 is
skipped in the average (the ratio is undefined) and counted in the row.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftkit.evaluate.stats import mean_defined, normalised
from graftkit.study.engine import Backend, LocalBackend, Unit, UnitStore, pick_subsets
from graftkit.study.merge_scale_settings import METHOD_OF, PER_EXPERT, BaseSpec, MergeScaleStudy
from graftkit.study.model_units import (
    MODULE,
    STATS_DIR,
    evaluate_unit,
    expert_unit,
    merge_unit,
    model_ref,
    needs_stats,
    stats_unit,
    unit_model,
)

Log = Callable[[str], object]


# -- models -------------------------------------------------------------------------------------------
def zoo_models(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: build (or find) one zoo base with its experts and multitask baseline (zoo cache)."""
    from graftkit.zoo.build import build_zoo, get_recipe

    recipe = get_recipe(inputs["size"])
    changes: dict[str, Any] = {"corpus": inputs["corpus"]} if inputs.get("corpus") else {}
    for stage in ("expert", "multitask"):  # gentler budgets than the zoo's defaults (lr, steps)
        if inputs.get(stage):
            config = getattr(recipe, stage)
            changes[stage] = type(config).model_validate({**config.model_dump(), **inputs[stage]})
    if inputs.get("expert"):
        changes["expert_overrides"] = {}  # one stated budget for every expert
    recipe = recipe.model_copy(update=changes)
    manifest = build_zoo(inputs["size"], bases=(inputs["kind"],), families=inputs["families"], recipe=recipe)
    base = manifest.bases[inputs["kind"]]
    return {
        "base": str(base),
        "experts": {f: str(p) for f, p in manifest.experts[inputs["kind"]].items()},
        "multitask": str(manifest.multitask[inputs["kind"]]),
    }


def build_models(base: BaseSpec, backend: Backend, store: UnitStore, log: Log) -> dict[str, Any]:
    """``{"base": ref, "experts": {family: ref}, "multitask": ref}`` for one base (refs: :func:`model_ref`)."""
    if base.source == "zoo":
        inputs = {"size": base.size, "kind": base.kind, "families": list(base.held_in)}
        inputs |= {"expert": base.zoo_expert, "multitask": base.zoo_multitask, "corpus": base.zoo_corpus}
        (built,) = backend.map([Unit(f"{__name__}:zoo_models", inputs, f"zoo {base.name}")], store)
        return {
            "base": model_ref(built["base"]),
            "experts": {f: model_ref(p) for f, p in built["experts"].items()},
            "multitask": model_ref(built["multitask"]),
        }
    if base.source == "folders":
        return {
            "base": model_ref(base.path),
            "experts": {f: model_ref(base.experts[f]) for f in base.held_in},
            "multitask": model_ref(base.multitask_path),
        }
    ref, experts = smollm2_experts(base, list(base.held_in), backend, store, log, multitask=True)
    multitask = experts.pop("")
    return {"base": ref, "experts": experts, "multitask": multitask}


def smollm2_experts(
    base: BaseSpec, families: list[str], backend: Backend, store: UnitStore, log: Log, multitask: bool = False
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The imported SmolLM2 and an expert per family fine-tuned from it (with ``multitask``, also the
    multitask baseline on all of ``base.held_in``, under the key ``""``), as refs."""
    from graftkit.zoo.smollm2 import import_smollm2

    ref = model_ref(import_smollm2(log=log))
    units = [expert_unit(ref, [f], base.expert.unit_settings("expert"), f"expert:{f}") for f in families]
    if multitask:
        units.append(expert_unit(ref, list(base.held_in), base.multitask.unit_settings("multitask"), "multitask"))
    backend.map(units, store, progress=f"{base.name}: experts")
    names = [*families, ""] if multitask else families
    return ref, {name: unit_model(store, unit) for name, unit in zip(names, units, strict=True)}


# -- references ---------------------------------------------------------------------------------------
def reference_scores(
    base: BaseSpec, models: dict[str, Any], study: MergeScaleStudy, backend: Backend, store: UnitStore
) -> dict[str, Any]:
    """Base, experts and multitask scores on test and validation: ``{split: {"base"|"multitask": {task: acc},
    "experts": {family: acc on its own task}}}``."""
    tasks = [*base.held_in, *base.held_out]
    extra = {"bf16": base.eval_bf16}
    units: list[Unit] = []
    for split, n in (("test", study.n_test), ("validation", study.n_validation)):
        units.append(evaluate_unit(models["base"], tasks, split, n, f"base/{split}", **extra))
        units.append(evaluate_unit(models["multitask"], tasks, split, n, f"multitask/{split}", **extra))
        units += [
            evaluate_unit(models["experts"][f], [f], split, n, f"expert:{f}/{split}", **extra) for f in base.held_in
        ]
    results = iter(backend.map(units, store, progress=f"{base.name}: references"))
    out: dict[str, Any] = {}
    for split in ("test", "validation"):
        out[split] = {"base": next(results)["scores"], "multitask": next(results)["scores"], "experts": {}}
        for family in base.held_in:
            out[split]["experts"][family] = next(results)["scores"][family]
    return out


def expert_statistics(
    base: BaseSpec, models: dict[str, Any], study: MergeScaleStudy, backend: Backend, store: UnitStore
) -> dict[str, str]:
    """``{family: statistics folder}`` of every expert (``graft stats`` on ``stats_n`` examples of its own
    task), computed only when a study method weighs experts by statistics (Fisher, RegMean); else ``{}``."""
    if not any(needs_stats(METHOD_OF.get(m, m)) for m in study.methods):
        return {}
    families = list(base.held_in)
    units = [stats_unit(models["experts"][f], f, study.stats_n, f"stats:{f}") for f in families]
    backend.map(units, store, progress=f"{base.name}: Fisher/RegMean statistics")
    return {f: str(store.path(u) / STATS_DIR) for f, u in zip(families, units, strict=True)}


# -- merges -------------------------------------------------------------------------------------------
def candidates(study: MergeScaleStudy, method: str) -> list[dict[str, float]]:
    """Every hyperparameter setting of ``method``'s grid, in grid order (``[{}]`` when it has none)."""
    grid = study.grid_of(method)
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]


def recipe_of(method: str, hyper: dict[str, float], seed: int) -> dict[str, Any]:
    """A recipe (without models) for a study method name and hyperparameters."""
    return {
        "merge_method": METHOD_OF.get(method, method),
        "parameters": {k: v for k, v in hyper.items() if k not in PER_EXPERT},
        "per_expert": {k: v for k, v in hyper.items() if k in PER_EXPERT},
        "seed": seed,
    }


def _merge_units(base, models, study, method, subset, hyper, split, tasks, n, label) -> Unit:
    experts = [models["experts"][f] for f in subset]
    recipe = recipe_of(method, hyper, study.merge_seed)
    extra: dict[str, Any] = {"bf16": base.eval_bf16}
    if needs_stats(recipe["merge_method"]):
        extra["stats"] = [models["stats"][f] for f in subset]
    return merge_unit(models["base"], experts, recipe, tasks, split, n, label, **extra)


def select_hyperparameters(base, models, study, backend, store, subsets) -> dict[tuple[str, int], dict[str, float]]:
    """The chosen hyperparameters per (method, n_experts): the best mean validation accuracy on the
    merged held-in tasks of ``select_on_seed``'s subset (ties go to the first in grid order)."""
    jobs, keys = [], []
    for method, k in itertools.product(study.methods, study.n_experts):
        options = candidates(study, method)
        if len(options) == 1:
            keys.append(((method, k), options[0], None))
            continue
        subset = subsets[k][study.select_on_seed if study.select_on_seed is not None else study.seeds[0]]
        for hyper in options:
            label = f"select {method} k={k} {hyper}"
            jobs.append(
                _merge_units(
                    base, models, study, method, subset, hyper, "validation", subset, study.n_validation, label
                )
            )
            keys.append(((method, k), hyper, len(jobs) - 1))
    results = backend.map(jobs, store, progress=f"{base.name}: hyperparameter search")
    best: dict[tuple[str, int], tuple[float, dict[str, float]]] = {}
    for key, hyper, index in keys:
        score = -1.0 if index is None else sum(results[index]["scores"].values()) / len(results[index]["scores"])
        if key not in best or score > best[key][0]:
            best[key] = (score, hyper)
    return {key: hyper for key, (_, hyper) in best.items()}


def run_merges(base, models, study, backend, store, subsets, chosen) -> list[dict[str, Any]]:
    """Merge every (method, n_experts, seed) with its chosen hyperparameters and score it on test."""
    jobs, meta = [], []
    for method, k, seed in itertools.product(study.methods, study.n_experts, study.seeds):
        subset, hyper = subsets[k][seed], chosen[(method, k)]
        tasks = [*subset, *base.held_out]
        label = f"{method} k={k} seed={seed}"
        jobs.append(_merge_units(base, models, study, method, subset, hyper, "test", tasks, study.n_test, label))
        meta.append({"method": method, "n_experts": k, "seed": seed, "experts": list(subset), "hyper": hyper})
    results = backend.map(jobs, store, progress=f"{base.name}: merges")
    return [{**m, "scores": r["scores"], "correct": r["correct"]} for m, r in zip(meta, results, strict=True)]


# -- the study ----------------------------------------------------------------------------------------
def run_base(base: BaseSpec, study: MergeScaleStudy, backend: Backend, store: UnitStore, log: Log) -> dict[str, Any]:
    """Everything of one base: models, reference scores, chosen hyperparameters, merged scores."""
    log(f"[bold]{base.name}[/]: models")
    models = build_models(base, backend, store, log)
    models["stats"] = expert_statistics(base, models, study, backend, store)
    log(f"[bold]{base.name}[/]: scoring base, experts, multitask")
    refs = reference_scores(base, models, study, backend, store)
    subsets = {k: pick_subsets(list(base.held_in), k, study.seeds) for k in study.n_experts}
    log(f"[bold]{base.name}[/]: choosing hyperparameters on validation")
    chosen = select_hyperparameters(base, models, study, backend, store, subsets)
    log(f"[bold]{base.name}[/]: {len(study.methods) * len(study.n_experts) * len(study.seeds)} merges")
    merges = run_merges(base, models, study, backend, store, subsets, chosen)
    return {"spec": base.model_dump(mode="json"), "models": models, "references": refs, "merges": merges}


def run_study(
    study: MergeScaleStudy, *, backend: Backend | None = None, store: UnitStore | None = None, log: Log = print
) -> dict[str, Any]:
    """Run (or resume) the whole grid; returns the raw result that :mod:`.merge_scale_report` tabulates."""
    backend = backend or LocalBackend()
    store = store or UnitStore()
    return {
        "study": study.model_dump(mode="json"),
        "bases": [run_base(b, study, backend, store, log) for b in study.bases],
    }


def merged_normalised(merge: dict[str, Any], refs: dict[str, Any], held_out: list[str]) -> dict[str, Any]:
    """Held-in (÷ each task's expert) and held-out (÷ base) normalised scores of one merged model."""
    test = refs["test"]
    held_in = [normalised(merge["scores"][t], test["experts"][t]) for t in merge["experts"]]
    out = [normalised(merge["scores"][t], test["base"][t]) for t in held_out]
    (hi, hi_skipped), (ho, ho_skipped) = mean_defined(held_in), mean_defined(out)
    return {"held_in_normalised": hi, "held_out_normalised": ho, "skipped": hi_skipped + ho_skipped}


__all__ = [
    "MODULE",
    "build_models",
    "candidates",
    "expert_statistics",
    "merged_normalised",
    "recipe_of",
    "reference_scores",
    "run_base",
    "run_merges",
    "run_study",
    "select_hyperparameters",
    "smollm2_experts",
    "zoo_models",
]
