"""The DARE study (Yu et al. 2023, "Language Models are Super Mario", arXiv 2311.03099).

Four parts, each a list of engine units (cached by content, resumable, local or Ray):

- **Sweep**: each expert alone, its delta sparsified at drop rate ``p`` by DARE (random, ``dare_linear``)
  or by magnitude (``magnitude_prune``), with the 1/(1 − p) rescale or without, scored on its own task.
- **Pre-step**: two or more experts merged by each method, with and without DARE applied to every
  delta first (the recipe's ``dare:`` pre-step), scored on the merged tasks.
- **Far expert**: one expert fine-tuned with a much larger learning rate, swept like the others.
- **Diagnostic**: the |δ| histogram of every expert, with the ``graft inspect`` verdict.

Experts come from the same units as the merge-scale study (:mod:`.merge_scale`), so a DARE run
after a merge-scale run trains nothing again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from graftkit.study.dare_settings import SPARSIFIER_METHOD, DareStudy
from graftkit.study.dare_units import histogram_unit
from graftkit.study.engine import Backend, LocalBackend, UnitStore
from graftkit.study.merge_scale import build_models, smollm2_experts
from graftkit.study.merge_scale_settings import PER_EXPERT
from graftkit.study.model_units import STATS_DIR, evaluate_unit, merge_unit, model_ref, needs_stats, stats_unit

Log = Callable[[str], object]


def experts_of(study: DareStudy, backend: Backend, store: UnitStore, log: Log) -> dict[str, Any]:
    """``{"base": ref, "experts": {label: {"family", "far", "ref"}}}``: the swept, pre-step and far experts."""
    base = study.base
    families = list(dict.fromkeys([*study.sweep.experts, *study.prestep.experts]))
    if base.source == "smollm2":
        base_ref, refs = smollm2_experts(base, families, backend, store, log)
    else:
        models = build_models(base, backend, store, log)
        base_ref, refs = models["base"], models["experts"]
    experts = {f: {"family": f, "far": False, "ref": refs[f]} for f in families}
    if study.far:
        experts[far_label(study)] = {
            "family": study.far.family,
            "far": True,
            "ref": _far_ref(study, backend, store, log),
        }
    return {"base": base_ref, "experts": experts}


def far_label(study: DareStudy) -> str:
    assert study.far is not None
    return f"{study.far.family}@lr{study.far.lr:g}"


def _far_ref(study: DareStudy, backend: Backend, store: UnitStore, log: Log) -> dict[str, str]:
    base, far = study.base, study.far
    assert far is not None
    if base.source == "folders":
        return model_ref(far.path)
    if base.source == "zoo":
        override = {**(base.zoo_expert or {}), "lr": far.lr, **({"steps": far.steps} if far.steps else {})}
        spec = base.model_copy(update={"held_in": (far.family,), "zoo_expert": override})
        return build_models(spec, backend, store, log)["experts"][far.family]
    spec = base.model_copy(update={"expert": study.far_training()})  # same unit as any expert, another lr
    return smollm2_experts(spec, [far.family], backend, store, log)[1][far.family]


# -- units --------------------------------------------------------------------------------------------
def sweep_points(study: DareStudy, experts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (expert, sparsifier, drop rate > 0, rescale, mask seed) of the sweep, in grid order.

    Magnitude pruning is deterministic, so it gets the first mask seed only; ``p = 0`` is the
    expert itself and is scored by the reference unit."""
    points = []
    for label, info in experts.items():
        sparsifiers = study.far.sparsifiers if info["far"] and study.far else study.sweep.sparsifiers
        if not info["far"] and label not in study.sweep.experts:
            continue
        for sparsifier, p, rescale in itertools.product(sparsifiers, study.sweep.drop_rates, study.sweep.rescale):
            seeds = study.sweep.mask_seeds if sparsifier == "dare" else study.sweep.mask_seeds[:1]
            points += [
                {"expert": label, "sparsifier": sparsifier, "drop_rate": p, "rescale": rescale, "mask_seed": s}
                for s in seeds
                if p > 0
            ]
    return points


def sweep_recipe(sparsifier: str, drop_rate: float, rescale: bool, mask_seed: int) -> dict[str, Any]:
    """One expert at weight 1 and λ = 1, its delta kept with probability (or share) ``1 − drop_rate``."""
    return {
        "merge_method": SPARSIFIER_METHOD[sparsifier],
        "parameters": {"lambda": 1.0, "rescale": "paper" if rescale else "none"},
        "per_expert": {"density": round(1.0 - drop_rate, 9)},
        "seed": mask_seed,
    }


def prestep_recipe(study: DareStudy, method: str, with_dare: bool) -> dict[str, Any]:
    """``method`` with the study's fixed hyperparameters, and the DARE pre-step when ``with_dare``."""
    hyper = study.prestep.parameters.get(method, {})
    recipe: dict[str, Any] = {
        "merge_method": method,
        "parameters": {k: v for k, v in hyper.items() if k not in PER_EXPERT},
        "per_expert": {k: v for k, v in hyper.items() if k in PER_EXPERT},
        "seed": 0,
    }
    if with_dare:
        recipe["dare"] = {"density": round(1.0 - study.prestep.drop_rate, 9), "rescale": "paper"}
    return recipe


# -- the study ----------------------------------------------------------------------------------------
def run_study(
    study: DareStudy, *, backend: Backend | None = None, store: UnitStore | None = None, log: Log = print
) -> dict[str, Any]:
    """Run (or resume) the whole study; returns the raw result that :mod:`.dare_report` tabulates."""
    backend, store = backend or LocalBackend(), store or UnitStore()
    base, n, bf16 = study.base, study.n_test, {"bf16": study.base.eval_bf16}
    log(f"[bold]{base.name}[/]: experts")
    models = experts_of(study, backend, store, log)
    experts, base_ref = models["experts"], models["base"]
    log(f"[bold]{base.name}[/]: scoring the experts and the base; |delta| histograms")
    families = sorted({e["family"] for e in experts.values()})
    refs = [
        evaluate_unit(e["ref"], [e["family"]], "test", n, f"expert:{label}/test", **bf16)
        for label, e in experts.items()
    ]
    refs.append(evaluate_unit(base_ref, families, "test", n, "base/test", **bf16))
    refs += [histogram_unit(base_ref, e["ref"], f"histogram:{label}") for label, e in experts.items()]
    done = backend.map(refs, store, progress=f"{base.name}: references")
    k = len(experts)
    scored = {label: done[i] for i, label in enumerate(experts)}
    histograms = {label: done[k + 1 + i] for i, label in enumerate(experts)}

    log(f"[bold]{base.name}[/]: drop-rate sweep")
    points = sweep_points(study, experts)
    units = [
        merge_unit(
            base_ref,
            [experts[pt["expert"]]["ref"]],
            sweep_recipe(pt["sparsifier"], pt["drop_rate"], pt["rescale"], pt["mask_seed"]),
            [experts[pt["expert"]]["family"]],
            "test",
            n,
            f"sweep {pt}",
            **bf16,
        )
        for pt in points
    ]
    swept = backend.map(units, store, progress=f"{base.name}: sweep")
    sweep = [
        {**pt, "family": experts[pt["expert"]]["family"], **_score(r)} for pt, r in zip(points, swept, strict=True)
    ]

    log(f"[bold]{base.name}[/]: DARE as a pre-step")
    prestep = _run_prestep(study, base_ref, experts, backend, store)
    return {
        "study": study.model_dump(mode="json"),
        "experts": {
            label: {"family": e["family"], "far": e["far"], "model": e["ref"], **_score(scored[label])}
            for label, e in experts.items()
        },
        "base_scores": done[k],
        "histograms": histograms,
        "sweep": sweep,
        "prestep": prestep,
    }


def _run_prestep(study: DareStudy, base_ref, experts, backend: Backend, store: UnitStore) -> list[dict[str, Any]]:
    pre = study.prestep
    refs = [experts[f]["ref"] for f in pre.experts]
    stats = None
    if any(needs_stats(m) for m in pre.methods):
        units = [stats_unit(experts[f]["ref"], f, pre.stats_n, f"stats:{f}") for f in pre.experts]
        backend.map(units, store, progress=f"{study.base.name}: Fisher/RegMean statistics")
        stats = [str(store.path(u) / STATS_DIR) for u in units]
    jobs, meta = [], []
    for method, with_dare in itertools.product(pre.methods, (False, True)):
        extra = {"bf16": study.base.eval_bf16} | ({"stats": stats} if needs_stats(method) else {})
        recipe = prestep_recipe(study, method, with_dare)
        label = f"prestep {method} dare={with_dare}"
        jobs.append(merge_unit(base_ref, refs, recipe, list(pre.experts), "test", study.n_test, label, **extra))
        meta.append({"method": method, "dare": with_dare, "drop_rate": pre.drop_rate if with_dare else 0.0})
    results = backend.map(jobs, store, progress=f"{study.base.name}: pre-step merges")
    return [
        {**m, "scores": r["scores"], "correct": r["correct"], "n": r["n"]} for m, r in zip(meta, results, strict=True)
    ]


def _score(result: dict[str, Any]) -> dict[str, Any]:
    """The single task's accuracy, correct count and n of a one-task evaluation."""
    ((task, accuracy),) = result["scores"].items()
    return {"accuracy": accuracy, "correct": result["correct"][task], "n": result["n"]}


__all__ = ["experts_of", "prestep_recipe", "run_study", "sweep_points", "sweep_recipe"]
