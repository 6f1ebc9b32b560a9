"""Settings of the CALM key-value study on a real anchor (``graft study calm-kv anchor=smollm2``).

The defaults are the CPU preset (see ``studies/calm_kv_real.yaml`` for its estimated cost). ``m_B`` is
the anchor (SmolLM2-135M-Instruct by default) fine-tuned gently on Numeric-Arithmetic; ``m_A`` is a
small Llama over the anchor's tokenizer, trained from scratch on KV-Substitution; the bridge uses the
paper's default wiring. Everything is checked here, before any model is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from graftkit.study.calm_real_settings import (
    ABLATIONS,
    AugmentShape,
    Frozen,
    RealAnchorSettings,
    StudyData,
    load_file_settings,
    need_slot,
    tiny_fields,
)
from graftkit.zoo.tasks.calm_kv import KVConfig

__all__ = ["ABLATIONS", "AugmentShape", "CalmKVRealSettings", "PrecheckSettings", "load_real_settings"]

DATASETS = ("kv_substitution", "numeric_arithmetic", "kv_arithmetic", "kv_arithmetic_k20", "kv_arithmetic_k80")
"""Test sets every row is scored on (``_k20``: the composition's keys only, ``_k80``: held-out keys only)."""
PATCH_SETS = ("operands", "operand_ends", "expression", "prompt_from_first_operand")
"""Positions the pre-check patches (see :mod:`graftkit.study.calm_kv_precheck`)."""


class PrecheckSettings(Frozen):
    """P14's activation patching on the anchor (see :mod:`graftkit.study.calm_kv_precheck`)."""

    model: Literal["anchor", "m_B"] = Field("m_B", description="anchor: before fine-tuning; m_B: after it")
    n: int = Field(32, ge=1, description="expressions (over random keys tokenized like their values)")
    layers: tuple[int, ...] | None = Field(None, description="blocks to patch after; None: 0 and every connection's")
    sets: tuple[str, ...] = PATCH_SETS
    threshold: float = Field(0.5, gt=0, le=1, description="recovered share of the oracle's loss gap that passes")

    @field_validator("sets")
    @classmethod
    def _known_sets(cls, sets: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in sets if s not in PATCH_SETS]
        if unknown or not sets:
            raise ValueError(f"unknown patch sets {unknown}; valid: {list(PATCH_SETS)}")
        return sets


class CalmKVRealSettings(RealAnchorSettings):
    """Everything that decides the real-anchor key-value study's models, data and scores (unit keys hash these)."""

    DATA: ClassVar[StudyData] = StudyData(
        "calm_kv_real", "calm-kv real", "kv_substitution", "numeric_arithmetic", "kv_arithmetic_k20", DATASETS
    )
    """m_A on KV-Substitution, m_B on Numeric-Arithmetic, bridges on KV-Arithmetic over the 20% keys only."""

    n_keys: int = Field(100, ge=5)
    max_value: int = Field(9, ge=5)
    min_terms: int = Field(3, ge=2)
    max_terms: int = Field(3, ge=2)
    train_fraction: float = Field(0.2, gt=0, lt=1)
    unique_values: bool = Field(False, description="False: each key's value drawn on its own (keys may share one)")
    question: str = Field("Evaluate {expression}", description="the chat question; {expression} is replaced")
    precheck: PrecheckSettings = PrecheckSettings()
    precheck_only: bool = Field(False, description="run only the pre-check (on precheck.model) and report it")

    @field_validator("question")
    @classmethod
    def _has_slot(cls, question: str) -> str:
        return need_slot(question, "expression", "Evaluate {expression}")

    @model_validator(mode="after")
    def _consistent(self) -> CalmKVRealSettings:
        if self.min_terms > self.max_terms:
            raise ValueError(f"min_terms={self.min_terms} exceeds max_terms={self.max_terms}")
        if self.unique_values and self.n_keys > self.max_value:
            raise ValueError(f"n_keys={self.n_keys} unique values need max_value >= n_keys (or unique_values=false)")
        return self

    def data_spec(self, seed: int) -> dict[str, Any]:
        """``{"kv": ...}``: one replicate's key table and expressions, as unit inputs."""
        import dataclasses

        return {"kv": dataclasses.asdict(self.kv(seed))}

    def kv(self, seed: int) -> KVConfig:
        """The key table and expressions of one replicate."""
        fields = ("n_keys", "max_value", "min_terms", "max_terms", "ops", "train_fraction", "unique_values")
        return KVConfig(seed=seed, **{f: getattr(self, f) for f in fields})

    @classmethod
    def quick(cls, **fields: Any) -> CalmKVRealSettings:
        """A tiny variant for tests: a few steps of an 8-layer, hidden-16 m_A, a handful of examples, two seeds."""
        # Two-digit values: the tiny anchor's key and oracle losses then differ clearly (the pre-check's ratio).
        base = {**tiny_fields(), "n_keys": 20, "max_value": 99, "min_terms": 2}
        base["precheck"] = PrecheckSettings(n=2, sets=("operands", "expression"))
        return cls.model_validate({**base, **fields})


REAL_KEYS = ("anchor", "anchor_path", "file")
"""Override keys that select the real-anchor study in ``graft study calm-kv`` (``file``: a YAML study file)."""


def wants_real(overrides: Sequence[str]) -> bool:
    """Whether ``key=value`` overrides ask for the real-anchor study (they set a key of :data:`REAL_KEYS`)."""
    return any(item.partition("=")[0].strip().split(".")[0] in REAL_KEYS for item in overrides)


def load_real_settings(quick: bool = False, overrides: Sequence[str] = ()) -> CalmKVRealSettings:
    """The real-anchor settings: defaults (or :meth:`~CalmKVRealSettings.quick`), then the YAML file that a
    ``file=PATH`` override names, then the other dotted ``key=value`` overrides.

    Raises:
        RecipeError: the file cannot be read, or a field is wrong (each named by its dotted path).
    """
    base = CalmKVRealSettings.quick() if quick else CalmKVRealSettings()
    return load_file_settings(CalmKVRealSettings, base, overrides, "The real-anchor calm-kv settings have errors")
