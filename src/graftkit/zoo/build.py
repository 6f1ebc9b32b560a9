"""Build a zoo: the bases of one size, an expert per held-in family from each, multitask baselines.

``pretrained`` is trained from scratch on pre-training text; ``instruct`` is ``pretrained`` further
trained on the instruction families. Each model is a cache entry (:mod:`graftkit.zoo.cache`), so a
second build returns at once and a killed one resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from graftkit.errors import UnknownNameError
from graftkit.zoo import train
from graftkit.zoo.cache import Cache, weights_hash
from graftkit.zoo.presets import get_preset
from graftkit.zoo.tasks import TASKS, tasks_of_kind
from graftkit.zoo.train import TrainConfig

BaseKind = Literal["pretrained", "instruct"]


class ZooRecipe(BaseModel):
    """The preset and the training configuration of each stage of a zoo."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str
    pretrain: TrainConfig
    instruct: TrainConfig
    expert: TrainConfig
    multitask: TrainConfig
    expert_overrides: dict[str, dict[str, float]] = {}
    """``{family: {TrainConfig field: value}}`` for families whose experts need another budget than
    ``expert`` (a new ``steps`` also sets ``warmup_steps`` to 5 % of it)."""
    corpus: str = "pretrain_text"
    """The ``pretrain`` task the base is pre-trained on (``pretrain_skills``: with the held-in skills)."""
    auxiliary: dict[str, tuple[str, ...]] = {}
    """``{family: auxiliary families}`` mixed into that family's expert (and into the multitask
    baseline when it covers the family): each example is drawn from a family chosen uniformly."""

    @field_validator("auxiliary")
    @classmethod
    def _auxiliary_families(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for family, extra in value.items():
            for name in extra:
                if TASKS.get(name).kind != "auxiliary":
                    raise ValueError(
                        f"auxiliary[{family!r}]: {name!r} is a {TASKS.get(name).kind} task; "
                        f"use one of {tasks_of_kind('auxiliary')}"
                    )
        return value

    def expert_families(self, family: str) -> list[str]:
        """What the expert of ``family`` trains on: the family, then its auxiliary families."""
        return [family, *self.auxiliary.get(family, ())]

    def multitask_families(self, families: Sequence[str]) -> list[str]:
        """``families`` followed by the auxiliary families of any of them, each once."""
        extra = [a for f in families for a in self.auxiliary.get(f, ()) if a not in families]
        return [*families, *dict.fromkeys(extra)]

    def expert_config(self, family: str) -> TrainConfig:
        """The expert training configuration of one family: ``expert`` with its overrides."""
        update = dict(self.expert_overrides.get(family, {}))
        if not update:
            return self.expert
        if "steps" in update:
            update["steps"] = int(update["steps"])
            update.setdefault("warmup_steps", update["steps"] // 20)
        return TrainConfig.model_validate({**self.expert.model_dump(), **update})


def _recipe(
    preset: str,
    pretrain_steps: int,
    tune_steps: int,
    pretrain_lr: float,
    tune_lr: float,
    instruct_steps: int | None = None,
    expert_overrides: dict[str, dict[str, float]] | None = None,
) -> ZooRecipe:
    """Experts run ``tune_steps`` at ``tune_lr``, instruction tuning ``instruct_steps`` (default the
    same) and the multitask baseline 4× as long. Every recipe mixes :data:`AUXILIARY` in."""

    def cfg(steps: int, lr: float) -> TrainConfig:
        return TrainConfig(steps=steps, lr=lr, warmup_steps=steps // 20)

    return ZooRecipe(
        preset=preset,
        pretrain=cfg(pretrain_steps, pretrain_lr),
        instruct=cfg(instruct_steps or tune_steps, tune_lr),
        expert=cfg(tune_steps, tune_lr),
        multitask=cfg(4 * tune_steps, tune_lr),
        expert_overrides=expert_overrides or {},
        auxiliary=AUXILIARY,
    )


AUXILIARY: dict[str, tuple[str, ...]] = {"key_lookup": ("copy_span",)}
"""key_lookup needs the induction circuit that copy_span grows; alone it stays at ~40 % (docs/zoo.md)."""

RECIPES: dict[str, ZooRecipe] = {
    "demo": _recipe("xs", 600, 800, pretrain_lr=3e-3, tune_lr=3e-3, instruct_steps=400),
    "xs": _recipe("xs", pretrain_steps=3000, tune_steps=1000, pretrain_lr=3e-3, tune_lr=3e-3),
    "s": _recipe(
        "s",
        pretrain_steps=3000,
        tune_steps=3000,
        pretrain_lr=2e-3,
        tune_lr=2e-3,
        expert_overrides={"char_count": {"steps": 8000}},
    ),
    "m": _recipe("m", pretrain_steps=4000, tune_steps=1000, pretrain_lr=1e-3, tune_lr=1e-3),
    "l": _recipe("l", pretrain_steps=6000, tune_steps=1000, pretrain_lr=6e-4, tune_lr=6e-4),
    "xl": _recipe("xl", pretrain_steps=10000, tune_steps=1500, pretrain_lr=4e-4, tune_lr=3e-4),
    "xxl": _recipe("xxl", pretrain_steps=10000, tune_steps=1500, pretrain_lr=3e-4, tune_lr=2e-4),
}
"""Default recipes by size name. ``demo`` is the smallest zoo that still shows merging effects."""


class ZooManifest(BaseModel):
    """Where a zoo's models are. ``experts[base][family]`` and ``multitask[base]`` are model folders."""

    size: str
    recipe: ZooRecipe
    bases: dict[str, Path]
    experts: dict[str, dict[str, Path]]
    multitask: dict[str, Path]

    def save(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ZooManifest:
        return cls.model_validate(json.loads(Path(path).read_text()))


def task_revisions(families: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{"revisions": {family: revision}}`` for the revised families among ``families``, else ``{}``:
    a revision enters the cache key of every model trained on that family, and unrevised tasks
    leave keys as they were."""
    revised = {name: TASKS.get(name).revision for name in families if TASKS.get(name).revision}
    return {"revisions": revised} if revised else {}


def get_recipe(size: str) -> ZooRecipe:
    try:
        return RECIPES[size]
    except KeyError:
        raise UnknownNameError("zoo size", size, list(RECIPES)) from None


def build_zoo(
    size: str,
    bases: Sequence[BaseKind] = ("pretrained", "instruct"),
    families: Sequence[str] | None = None,
    *,
    multitask: bool = True,
    recipe: ZooRecipe | None = None,
    cache: Cache | None = None,
    progress: bool | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ZooManifest:
    """Build (or find in the cache) every model of one zoo.

    Args:
        size: a key of :data:`RECIPES` (``"demo"``, ``"xs"`` … ``"xxl"``); names the recipe.
        bases: which bases to build experts from; ``instruct`` also builds ``pretrained``.
        families: held-in families to train experts on (all by default).
        multitask: also build the multitask baseline of each base (on ``families``).
        recipe: overrides the recipe of ``size``.
        log: called with one line per model as it is found or built.
    """
    recipe = recipe or get_recipe(size)
    get_preset(recipe.preset)
    families = list(families or tasks_of_kind("held_in"))
    for name in families:
        if TASKS.get(name).kind != "held_in":
            raise ValueError(f"expert family {name!r} is {TASKS.get(name).kind}, not held_in")
    for base in bases:
        if base not in ("pretrained", "instruct"):
            raise UnknownNameError("base kind", base, ["pretrained", "instruct"])
    cache = cache or Cache()
    loop: dict[str, Any] = {"progress": progress, "device": device}
    say = log or (lambda line: None)

    def entry(stage: str, inputs: dict[str, Any], fn: Callable[[Path, Path], object]) -> Path:
        inputs = {**inputs, **task_revisions(inputs["families"])}
        hit = cache.get(stage, inputs)
        path = hit or cache.build(stage, inputs, fn)
        say(f"{stage} {inputs.get('families', '')}: {'cached' if hit else 'built'} {path}")
        return path

    pretrain_in = {"preset": recipe.preset, "config": recipe.pretrain, "families": [recipe.corpus]}
    paths: dict[str, Path] = {
        "pretrained": entry(
            "pretrain",
            pretrain_in,
            lambda out, work: train.pretrain(
                recipe.preset, recipe.pretrain, out, corpus=recipe.corpus, work_dir=work, **loop
            ),
        )
    }
    if "instruct" in bases:
        inst_families = tasks_of_kind("instruct")
        parent = paths["pretrained"]
        paths["instruct"] = entry(
            "instruct",
            {"parent": weights_hash(parent), "config": recipe.instruct, "families": inst_families},
            lambda out, work: train.instruction_tune(
                parent, recipe.instruct, out, inst_families, work_dir=work, **loop
            ),
        )

    experts: dict[str, dict[str, Path]] = {}
    multi: dict[str, Path] = {}
    multi_families = recipe.multitask_families(families)
    for base in bases:
        parent, parent_hash = paths[base], weights_hash(paths[base])
        experts[base] = {}
        for family in families:
            experts[base][family] = entry(
                "expert",
                {
                    "parent": parent_hash,
                    "config": recipe.expert_config(family),
                    "families": recipe.expert_families(family),
                },
                lambda out, work, f=family, p=parent: train.train_expert(
                    p, recipe.expert_families(f), recipe.expert_config(f), out, work_dir=work, **loop
                ),
            )
        if multitask:
            multi[base] = entry(
                "multitask",
                {"parent": parent_hash, "config": recipe.multitask, "families": multi_families},
                lambda out, work, p=parent: train.train_multitask(
                    p, recipe.multitask, out, multi_families, work_dir=work, **loop
                ),
            )
    return ZooManifest(
        size=size,
        recipe=recipe,
        bases={b: paths[b] for b in bases},
        experts=experts,
        multitask=multi,
    )
