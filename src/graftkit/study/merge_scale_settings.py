"""The merge-scale study file (``graft study merge-scale STUDY.yaml``), validated before any work.

A study file lists bases and the grid over them. Each base says where it comes from (the imported
SmolLM2, or a zoo size and kind), its held-in and held-out task families, and how its experts and
multitask baseline are trained. Every field has the default of the study run in
``docs/results/merge_scale.md``; a file needs only what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graftkit.errors import UnknownNameError
from graftkit.study.engine.study_file import load_study_file
from graftkit.zoo.train import TrainConfig

CHAT_HELD_IN = (
    "chat_addition",
    "chat_reversal",
    "chat_digit_sort",
    "chat_char_count",
    "chat_key_lookup",
    "chat_uppercase",
    "chat_modulo",
    "chat_letter_double",
)
CHAT_HELD_OUT = ("chat_subtraction", "chat_multiplication", "chat_next_number", "chat_larger")

SMOLLM2_EXPERT = TrainConfig(steps=100, batch_size=16, seq_len=96, lr=1e-4, warmup_steps=10, min_lr_ratio=0.1)
"""The paper's regime in miniature: a small lr and few steps from a strong base (mean |δ| ≈ 1e-3)."""
SMOLLM2_MULTITASK = TrainConfig(steps=200, batch_size=16, seq_len=96, lr=1e-4, warmup_steps=20, min_lr_ratio=0.1)

DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = {
    "average": {},
    "task_arithmetic": {"lambda": [0.5, 1.0]},
    "ties": {"lambda": [1.0], "density": [0.2, 0.5]},
    "dare_ties": {"lambda": [1.0], "density": [0.2, 0.5]},
    "fisher": {},
    "regmean": {"alpha": [0.5, 0.9, 1.0]},
}
"""The hyperparameter grid per method, searched on the validation split (held-in tasks)."""

METHOD_OF = {"average": "linear", "task_arithmetic": "task_arithmetic", "ties": "ties", "dare_ties": "dare_ties"}
PER_EXPERT = {"density"}
"""Parameters that graftkit's methods read per expert (``models[].parameters``), not globally."""


class Training(BaseModel):
    """How a base's experts (or multitask baseline) are fine-tuned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: TrainConfig
    freeze: tuple[str, ...] = ()
    bf16: bool | None = None
    threads: int = Field(2, ge=1)

    def unit_settings(self, stage: str) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "stage": stage}


class BaseSpec(BaseModel):
    """One base of the grid and its task suite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="label in results, e.g. smollm2-it or zoo-s-instruct")
    source: Literal["smollm2", "zoo", "folders"] = Field(
        description="smollm2: the imported SmolLM2 with experts trained here; zoo: a zoo size and kind "
        "(its own recipes); folders: your own base, experts and multitask baseline (model folders)"
    )
    kind: Literal["instruct", "pretrained"] = "instruct"
    size: str = Field("135M", description="the zoo preset (xs, s, m, ...) or the real model's size")
    params: int | None = None
    held_in: tuple[str, ...] = CHAT_HELD_IN
    held_out: tuple[str, ...] = CHAT_HELD_OUT
    expert: Training = Training(config=SMOLLM2_EXPERT, freeze=("embed_tokens",), bf16=True)
    multitask: Training = Training(config=SMOLLM2_MULTITASK, freeze=("embed_tokens",), bf16=True)
    eval_bf16: bool = True
    zoo_expert: dict[str, float] | None = Field(
        None, description="zoo only: TrainConfig fields that replace the zoo recipe's expert ones (e.g. lr, steps)"
    )
    zoo_multitask: dict[str, float] | None = Field(None, description="zoo only: the same for the multitask baseline")
    zoo_corpus: str | None = Field(None, description="zoo only: the pre-training corpus (pretrain_skills, ...)")
    path: Path | None = Field(None, description="folders only: the base model folder")
    experts: dict[str, Path] = Field(default_factory=dict, description="folders only: {held-in task: expert folder}")
    multitask_path: Path | None = Field(None, description="folders only: the multitask baseline folder")

    @model_validator(mode="before")
    @classmethod
    def _zoo_defaults(cls, data: Any) -> Any:
        """A zoo base defaults to the zoo's own (character-level) held-in and held-out families."""
        if isinstance(data, dict) and data.get("source") == "zoo":
            from graftkit.zoo.tasks import tasks_of_kind

            data = {"held_in": tasks_of_kind("held_in"), "held_out": tasks_of_kind("held_out"), **data}
            data.setdefault("eval_bf16", False)
        return data

    @model_validator(mode="after")
    def _folders_complete(self) -> BaseSpec:
        if self.source != "folders":
            return self
        missing = [t for t in self.held_in if t not in self.experts]
        if self.path is None or self.multitask_path is None or missing:
            raise ValueError(
                f"base {self.name!r} (source: folders) needs path, multitask_path and an expert per held-in task"
                + (f"; no expert for {missing}" if missing else "")
            )
        return self

    @model_validator(mode="after")
    def _tasks_exist(self) -> BaseSpec:
        from graftkit.zoo.tasks import TASKS

        for name in (*self.held_in, *self.held_out):
            TASKS.get(name)  # unknown names fail with the closest match
        if set(self.held_in) & set(self.held_out):
            raise ValueError(
                f"base {self.name!r}: tasks both held-in and held-out: {set(self.held_in) & set(self.held_out)}"
            )
        return self


class MergeScaleStudy(BaseModel):
    """The grid: bases × methods × number of experts × seeds (which experts are picked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "merge_scale"
    bases: tuple[BaseSpec, ...] = (BaseSpec(name="smollm2-it", source="smollm2"),)
    methods: tuple[str, ...] = ("average", "task_arithmetic", "ties", "dare_ties", "fisher", "regmean")
    n_experts: tuple[int, ...] = (2, 4, 6, 8)
    seeds: tuple[int, ...] = (0, 1, 2)
    grids: dict[str, dict[str, list[float]]] = Field(default_factory=lambda: dict(DEFAULT_GRIDS))
    n_test: int = Field(64, ge=1)
    n_validation: int = Field(32, ge=1)
    select_on_seed: int | None = Field(
        0, description="choose hyperparameters on this seed's expert subset and reuse them (None: per seed)"
    )
    merge_seed: int = 0
    stats_n: int = Field(
        64, ge=1, description="examples of each expert's own task for its Fisher/RegMean statistics (graft stats)"
    )

    @field_validator("methods")
    @classmethod
    def _methods_known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from graftkit.methods import METHODS

        for name in value:
            try:
                METHODS.get(METHOD_OF.get(name, name))
            except UnknownNameError as err:
                raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _selection_seed_in_grid(self) -> MergeScaleStudy:
        if self.select_on_seed is not None and self.select_on_seed not in self.seeds:
            raise ValueError(f"select_on_seed {self.select_on_seed} is not one of seeds {list(self.seeds)}")
        return self

    @model_validator(mode="after")
    def _grid_fits(self) -> MergeScaleStudy:
        for base in self.bases:
            too_many = [k for k in self.n_experts if k > len(base.held_in) or k < 1]
            if too_many:
                raise ValueError(
                    f"n_experts {too_many} do not fit base {base.name!r} with {len(base.held_in)} held-in tasks"
                )
        return self

    def grid_of(self, method: str) -> dict[str, list[float]]:
        return self.grids.get(method, {})


def load_study(path: Path | None = None, overrides: dict[str, Any] | None = None) -> MergeScaleStudy:
    """Parse a study file (YAML); ``None`` gives the default study.

    Raises:
        RecipeError: naming the field and what is wrong.
    """
    return load_study_file(MergeScaleStudy, path, overrides, what="merge-scale study")
