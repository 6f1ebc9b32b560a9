"""Settings of the CALM key-value study on a real anchor (``graft study calm-kv anchor=smollm2``).

The defaults are the CPU preset (see ``studies/calm_kv_real.yaml`` for its estimated cost). ``m_B`` is
the anchor (SmolLM2-135M-Instruct by default) fine-tuned gently on Numeric-Arithmetic; ``m_A`` is a
small Llama over the anchor's tokenizer, trained from scratch on KV-Substitution; the bridge uses the
paper's default wiring. Everything is checked here, before any model is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from graftkit.compose.recipe import OptimRecipe, apply_overrides
from graftkit.compose.wiring import Connection
from graftkit.errors import RecipeError
from graftkit.yaml_input import explain, read_mapping
from graftkit.zoo.tasks.calm_kv import KVConfig
from graftkit.zoo.train import TrainConfig

ABLATIONS = ("random_m_A", "untrained_m_A", "encoder", "lora")
"""The paper's Table 5 ablations: random-weight m_A, same-size m_A never shown the keys, a bridge trained
and decoded in encoder mode, LoRA on m_B with the bridge's parameter count and data."""
PATCH_SETS = ("operands", "operand_ends", "expression", "prompt_from_first_operand")
"""Positions the pre-check patches (see :mod:`graftkit.study.calm_kv_precheck`)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AugmentShape(_Frozen):
    """``m_A``'s architecture: a Llama over the anchor's vocabulary (embeddings tied: the vocabulary is large)."""

    hidden: int = Field(128, ge=8)
    layers: int = Field(16, ge=4, description="the default wiring joins every 4th layer: at least 4")
    heads: int = Field(4, ge=1)
    intermediate: int = Field(352, ge=8)
    tie_embeddings: bool = True
    max_positions: int = Field(256, ge=32)

    @model_validator(mode="after")
    def _heads_divide(self) -> AugmentShape:
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by heads={self.heads}")
        return self


class PrecheckSettings(_Frozen):
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


class CalmKVRealSettings(_Frozen):
    """Everything that decides the real-anchor study's models, data and scores (unit keys hash these)."""

    anchor: str = Field("smollm2", description="a `graft zoo import` name, used when anchor_path is not set")
    anchor_path: Path | None = Field(None, description="a model folder used as the anchor instead (a stand-in)")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="full replicates: keys, models, bridges")

    n_keys: int = Field(100, ge=5)
    max_value: int = Field(99, ge=5)
    min_terms: int = Field(3, ge=2)
    max_terms: int = Field(3, ge=2)
    ops: str = Field("+-", min_length=1)
    train_fraction: float = Field(0.2, gt=0, lt=1)
    unique_values: bool = Field(False, description="False: each key's value drawn on its own (keys may share one)")
    question: str = Field("Evaluate {expression}", description="the chat question; {expression} is replaced")

    augment: AugmentShape = AugmentShape()
    augment_train: TrainConfig = TrainConfig(steps=1500, batch_size=32, seq_len=64, lr=2e-3, warmup_steps=100)
    untrained_train: TrainConfig = TrainConfig(steps=600, batch_size=16, seq_len=64, lr=2e-3, warmup_steps=50)
    """Zoo text (no keys) for the same-size ``m_A`` of the ``untrained_m_A`` ablation."""
    anchor_train: TrainConfig = TrainConfig(steps=150, batch_size=16, seq_len=64, lr=5e-5, warmup_steps=15)
    anchor_freeze: tuple[str, ...] = ("embed_tokens",)
    bf16: bool = Field(True, description="bfloat16 autocast for m_B, the bridges, LoRA and scoring")

    connections: tuple[Connection, ...] | None = Field(None, description="None: the paper's default wiring")
    bridge: OptimRecipe = OptimRecipe(lr=1e-3, steps=300, warmup=30, batch_size=16)
    n_composition: int = Field(4000, ge=1, description="distinct KV-Arithmetic train examples over the 20% keys")
    ablations: tuple[str, ...] = ABLATIONS
    n_eval: int = Field(100, ge=1, description="test examples per dataset")
    max_new_tokens: int = Field(16, ge=1, description="enough for a 3-operand substitution; ~4 per operand")
    precheck: PrecheckSettings = PrecheckSettings()
    precheck_only: bool = Field(False, description="run only the pre-check (on precheck.model) and report it")
    threads: int = Field(2, ge=1)
    device: str = "cpu"

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: str) -> str:
        if set(ops) - set("+-*"):
            raise ValueError(f"ops may hold only + - * (got {ops!r})")
        return ops

    @field_validator("question")
    @classmethod
    def _has_slot(cls, question: str) -> str:
        if "{expression}" not in question:
            raise ValueError("the question needs an {expression} slot, e.g. 'Evaluate {expression}'")
        return question

    @field_validator("ablations")
    @classmethod
    def _known_ablations(cls, ablations: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [a for a in ablations if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; valid: {list(ABLATIONS)}")
        return ablations

    @field_validator("anchor")
    @classmethod
    def _importable(cls, anchor: str) -> str:
        from graftkit.zoo.smollm2 import IMPORTS

        if anchor not in IMPORTS:
            raise ValueError(f"unknown anchor {anchor!r}; valid: {IMPORTS.names()} (or set anchor_path)")
        return anchor

    @model_validator(mode="after")
    def _consistent(self) -> CalmKVRealSettings:
        if self.min_terms > self.max_terms:
            raise ValueError(f"min_terms={self.min_terms} exceeds max_terms={self.max_terms}")
        if self.unique_values and self.n_keys > self.max_value:
            raise ValueError(f"n_keys={self.n_keys} unique values need max_value >= n_keys (or unique_values=false)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {list(self.seeds)}")
        bad = [c for c in self.connections or () if c.augment_layer >= self.augment.layers]
        if bad:
            raise ValueError(f"connections {bad} name augment layers beyond augment.layers={self.augment.layers}")
        return self

    def kv(self, seed: int) -> KVConfig:
        """The key table and expressions of one replicate."""
        fields = ("n_keys", "max_value", "min_terms", "max_terms", "ops", "train_fraction", "unique_values")
        return KVConfig(seed=seed, **{f: getattr(self, f) for f in fields})

    @classmethod
    def quick(cls, **fields: Any) -> CalmKVRealSettings:
        """A tiny variant for tests: a few steps of an 8-layer, hidden-16 m_A, a handful of examples, two seeds."""
        tiny = TrainConfig(steps=3, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=1)
        base = {
            "seeds": (0, 1),
            "n_keys": 20,
            "min_terms": 2,
            "augment": AugmentShape(hidden=16, layers=8, heads=2, intermediate=32),
            "augment_train": tiny,
            "untrained_train": tiny,
            "anchor_train": tiny,
            "bf16": False,
            "bridge": OptimRecipe(lr=1e-3, steps=2, warmup=1, batch_size=4),
            "n_composition": 12,
            "n_eval": 3,
            "max_new_tokens": 4,
            "precheck": PrecheckSettings(n=2, sets=("operands", "expression")),
            "threads": 1,
        }
        return cls.model_validate({**base, **fields})


REAL_KEYS = ("anchor", "anchor_path", "file")
"""Override keys that select the real-anchor study in ``graft study calm-kv`` (``file``: a YAML study file)."""


def wants_real(overrides: Sequence[str]) -> bool:
    """Whether ``key=value`` overrides ask for the real-anchor study (they set a key of :data:`REAL_KEYS`)."""
    return any(item.partition("=")[0].strip().split(".")[0] in REAL_KEYS for item in overrides)


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values, sections merged key by key (a file sets only what it changes)."""
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if nested else value
    return out


def load_real_settings(quick: bool = False, overrides: Sequence[str] = ()) -> CalmKVRealSettings:
    """The real-anchor settings: defaults (or :meth:`~CalmKVRealSettings.quick`), then the YAML file that a
    ``file=PATH`` override names, then the other dotted ``key=value`` overrides.

    Raises:
        RecipeError: the file cannot be read, or a field is wrong (each named by its dotted path).
    """
    files = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "file"]
    rest = [o for o in overrides if o.partition("=")[0].strip() != "file"]
    base = (CalmKVRealSettings.quick() if quick else CalmKVRealSettings()).model_dump(mode="json")
    for path in files:
        base = _merged(base, read_mapping(Path(path), "fields of CalmKVRealSettings"))
    try:
        return CalmKVRealSettings.model_validate(apply_overrides(base, rest))
    except ValidationError as err:
        raise RecipeError(explain(err, "The real-anchor calm-kv settings have errors")) from None
