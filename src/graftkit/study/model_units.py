"""Study units on models: fine-tune an expert, score a model, merge-and-score. Shared by the studies.

Every function here has the engine's unit signature ``fn(inputs, out_dir, work_dir) -> dict``
(:mod:`graftkit.study.engine.units`) and is named by import path in a :class:`Unit`, so the same
call runs in this process or on a Ray worker, is cached by its inputs, and resumes when killed.
A model a unit trains is written into ``out_dir/model``; since ``out_dir`` is the unit's
``.partial`` folder until the unit completes, results name it relative to the unit folder, and
callers find it with :func:`unit_model`.

Inputs name models by folder *and* by weights hash (:func:`model_ref`), so a unit's key changes
when a parent model is rebuilt, even at the same path.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from graftkit.study.engine import Unit, UnitStore
from graftkit.zoo.cache import weights_hash

MODULE = "graftkit.study.model_units"
MODEL_DIR = "model"
STATS_DIR = "stats"


def unit_model(store: UnitStore, unit: Unit) -> dict[str, str]:
    """The model a completed :func:`train_expert` (or kept :func:`merge_evaluate`) unit wrote, as a ref."""
    result = store.get(unit)
    if result is None:
        raise ValueError(f"unit {unit.label or unit.name} has not run")
    return {"path": str(store.path(unit) / MODEL_DIR), "weights": result["weights"]}


def model_ref(folder: Path | str) -> dict[str, str]:
    """``{"path": folder, "weights": hash}``: how unit inputs name a model."""
    return {"path": str(folder), "weights": weights_hash(Path(folder))}


# -- training -----------------------------------------------------------------------------------------
def train_expert(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Fine-tune ``inputs["base"]`` on ``inputs["families"]`` (one expert, or the multitask baseline).

    Inputs: ``base`` (:func:`model_ref`), ``families`` (task names), ``config`` (a
    :class:`~graftkit.zoo.train.TrainConfig` dict), ``freeze`` (parameter-name substrings kept at
    the base's values), ``bf16`` (autocast), ``threads`` (torch threads; not part of the science,
    but part of the key, since float sums depend on it).
    """
    import torch

    from graftkit.zoo.train import TrainConfig, finetune

    torch.set_num_threads(int(inputs.get("threads", 2)))
    config = TrainConfig.model_validate(inputs["config"])
    model_dir = out_dir / MODEL_DIR
    stats = finetune(
        Path(inputs["base"]["path"]),
        list(inputs["families"]),
        config,
        model_dir,
        stage=inputs.get("stage", "expert"),
        freeze=tuple(inputs.get("freeze", ())),
        work_dir=work_dir,
        checkpoint_every=int(inputs.get("checkpoint_every", 25)),
        bf16=inputs.get("bf16"),
        device="cpu" if inputs.get("device") is None else inputs["device"],
    )
    return {"model": MODEL_DIR, "weights": weights_hash(model_dir), "train": stats.model_dump()}


def expert_unit(base: dict[str, str], families: list[str], settings: dict[str, Any], label: str) -> Unit:
    """The :func:`train_expert` unit for ``families`` from ``base`` with ``settings`` (config, freeze, ...)."""
    return Unit(f"{MODULE}:train_expert", {"base": base, "families": list(families), **settings}, label=label)


# -- scoring ------------------------------------------------------------------------------------------
def _score(model_dir: Path, tasks: list[str], split: str, n: int, inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    from graftkit.evaluate import evaluate_model

    if inputs.get("threads"):
        torch.set_num_threads(int(inputs["threads"]))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(inputs.get("bf16", False)))
    with autocast:
        scores = evaluate_model(model_dir, tasks, split=split, n=n, batch_size=64, device="cpu", with_loss=False)
    return {
        "scores": {s.task: s.accuracy for s in scores},
        "correct": {s.task: s.correct for s in scores},
        "n": n,
        "split": split,
    }


def evaluate(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Exact-match accuracy of ``inputs["model"]`` on ``tasks`` (``split``, ``n`` examples each)."""
    return _score(Path(inputs["model"]["path"]), list(inputs["tasks"]), inputs["split"], int(inputs["n"]), inputs)


def evaluate_unit(model: dict[str, str], tasks: list[str], split: str, n: int, label: str, **extra: Any) -> Unit:
    return Unit(f"{MODULE}:evaluate", {"model": model, "tasks": list(tasks), "split": split, "n": n, **extra}, label)


def merge_evaluate(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Merge by ``inputs["recipe"]`` (paths resolved from ``base`` and ``experts``) and score the result.

    ``inputs["stats"]`` (optional) lists a statistics folder per expert (``graft stats``), for the
    data-aware methods. The merged model is built in ``work_dir`` (deleted when the unit completes, so a grid of
    hundreds of merges keeps only their scores) unless ``keep`` is set, then in ``out_dir/model``.
    """
    import graftkit

    recipe = dict(inputs["recipe"])
    recipe["base_model"] = inputs["base"]["path"]
    per_expert = recipe.pop("per_expert", {})
    stats = inputs.get("stats") or [None] * len(inputs["experts"])  # statistics folders (fisher, regmean)
    recipe["models"] = [
        {"model": e["path"], "parameters": dict(per_expert), **({"stats": s} if s else {})}
        for e, s in zip(inputs["experts"], stats, strict=True)
    ]
    target = (out_dir if inputs.get("keep") else work_dir) / MODEL_DIR
    if target.exists():
        shutil.rmtree(target)
    merged = graftkit.merge(recipe, target, progress=False, threads=inputs.get("threads"))
    result = _score(merged, list(inputs["tasks"]), inputs["split"], int(inputs["n"]), inputs)
    if inputs.get("keep"):
        result |= {"model": MODEL_DIR, "weights": weights_hash(merged)}
    return result


def merge_unit(
    base: dict[str, str],
    experts: list[dict[str, str]],
    recipe: dict[str, Any],
    tasks: list[str],
    split: str,
    n: int,
    label: str,
    **extra: Any,
) -> Unit:
    """The :func:`merge_evaluate` unit; ``recipe`` holds ``merge_method``, ``parameters``, ``per_expert``, ``seed``."""
    inputs = {"base": base, "experts": experts, "recipe": recipe, "tasks": list(tasks), "split": split, "n": n}
    return Unit(f"{MODULE}:merge_evaluate", {**inputs, **extra}, label)


# -- statistics (Fisher, RegMean) ---------------------------------------------------------------------
def expert_stats(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Fisher and RegMean statistics of ``inputs["model"]`` on ``inputs["task"]`` (``n`` train examples),
    written into ``out_dir/stats`` (:func:`graftkit.stats.run.compute_stats`)."""
    import torch

    from graftkit.stats.run import compute_stats

    torch.set_num_threads(int(inputs.get("threads", 2)))
    compute_stats(inputs["model"]["path"], out_dir / STATS_DIR, task=inputs["task"], n=int(inputs["n"]))
    return {"stats": STATS_DIR}


def needs_stats(method: str) -> bool:
    """Whether the registered merge ``method`` weighs experts by statistics (Fisher, RegMean)."""
    from graftkit.methods import METHODS

    return METHODS.get(method).needs_stats is not None


def stats_unit(model: dict[str, str], task: str, n: int, label: str) -> Unit:
    """The :func:`expert_stats` unit; its folder is ``store.path(unit) / STATS_DIR`` once it has run."""
    return Unit(f"{MODULE}:expert_stats", {"model": model, "task": task, "n": n}, label)
