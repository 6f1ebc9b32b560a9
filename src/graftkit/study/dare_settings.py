"""The DARE study file (``graft study dare STUDY.yaml``), validated before any work.

A DARE study names one base (as the merge-scale study does: the imported SmolLM2, a zoo size and
kind, or your own folders) and its three parts: the drop-rate sweep on single experts, DARE as a
pre-step before other methods, and one expert trained far from the base. Every field has the
default of the run in ``docs/results/dare.md``; a file needs only what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graftkit.errors import UnknownNameError
from graftkit.study.engine.study_file import load_study_file
from graftkit.study.merge_scale_settings import BaseSpec, Training

DROP_RATES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
SPARSIFIER_METHOD = {"dare": "dare_linear", "magnitude": "magnitude_prune"}
"""The single-expert method that applies each sparsifier to the delta (λ = 1, weight 1)."""


class Sweep(BaseModel):
    """Drop ``p`` of each expert's delta (at random, or the smallest by magnitude), with or without
    the 1/(1 − p) rescale, and score the expert's own task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experts: tuple[str, ...] = ("chat_addition", "chat_uppercase")
    drop_rates: tuple[float, ...] = DROP_RATES
    sparsifiers: tuple[Literal["dare", "magnitude"], ...] = ("dare", "magnitude")
    rescale: tuple[bool, ...] = (True, False)
    mask_seeds: tuple[int, ...] = Field((0,), min_length=1, description="DARE's random masks; scores are pooled")

    @field_validator("drop_rates")
    @classmethod
    def _rates_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        bad = [p for p in value if not 0.0 <= p < 1.0]
        if bad:
            raise ValueError(f"drop rates must be in [0, 1): {bad}")
        return value


class PreStep(BaseModel):
    """Merge ``experts`` with each method, with and without DARE (``drop_rate``, rescaled) first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experts: tuple[str, ...] = ("chat_addition", "chat_uppercase")
    methods: tuple[str, ...] = ("linear", "task_arithmetic", "fisher", "regmean", "ties")
    drop_rate: float = Field(0.9, gt=0.0, lt=1.0)
    parameters: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "task_arithmetic": {"lambda": 1.0},
            "ties": {"lambda": 1.0, "density": 0.5},
            "regmean": {"alpha": 0.9},
        },
        description="fixed hyperparameters per method (per-expert ones, like density, are applied to every expert)",
    )
    stats_n: int = Field(64, ge=1, description="examples of each expert's task for the Fisher/RegMean statistics")

    @field_validator("methods")
    @classmethod
    def _methods_known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from graftkit.methods import METHODS

        for name in value:
            try:
                METHODS.get(name)
            except UnknownNameError as err:
                raise ValueError(str(err)) from None
        return value


class FarExpert(BaseModel):
    """DARE's failing case: one expert fine-tuned with a much larger learning rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = "chat_addition"
    lr: float = Field(2e-3, gt=0)
    steps: int | None = Field(None, ge=1, description="default: the base's expert steps")
    sparsifiers: tuple[Literal["dare", "magnitude"], ...] = ("dare",)
    path: Path | None = Field(None, description="folders bases only: the far-moved expert's folder")


class DareStudy(BaseModel):
    """The whole DARE study on one base."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "dare"
    base: BaseSpec = BaseSpec(name="smollm2-it", source="smollm2")
    sweep: Sweep = Sweep()
    prestep: PreStep = PreStep()
    far: FarExpert | None = FarExpert()
    n_test: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _experts_are_held_in(self) -> DareStudy:
        families = {*self.sweep.experts, *self.prestep.experts} | ({self.far.family} if self.far else set())
        missing = sorted(families - set(self.base.held_in))
        if missing:
            raise ValueError(f"experts {missing} are not held-in tasks of base {self.base.name!r}")
        if self.far and self.base.source == "folders" and self.far.path is None:
            raise ValueError("far.path is required for a folders base (or set far: null)")
        return self

    def far_training(self) -> Training:
        """The SmolLM2 expert training with the far expert's learning rate (and steps)."""
        config = self.base.expert.config
        assert self.far is not None
        update: dict[str, Any] = {"lr": self.far.lr, "steps": self.far.steps or config.steps}
        return self.base.expert.model_copy(update={"config": config.model_copy(update=update)})


def load_dare_study(path: Path | None = None, overrides: dict[str, Any] | None = None) -> DareStudy:
    """Parse a DARE study file (YAML); ``None`` gives the default (SmolLM2) study.

    Raises:
        RecipeError: naming the field and what is wrong.
    """
    return load_study_file(DareStudy, path, overrides, what="DARE study")


__all__ = ["DROP_RATES", "SPARSIFIER_METHOD", "DareStudy", "FarExpert", "PreStep", "Sweep", "load_dare_study"]
