"""Settings shared by the CALM studies on a real anchor (``graft study calm-kv anchor=...``, ``graft study calm-lang``).

:class:`RealAnchorSettings` holds what every such study decides the same way: the anchor (a zoo import or
a folder), the seeds, ``m_A``'s shape and training, ``m_B``'s gentle fine-tune, the bridge, the ablations
and the scoring budget. A study subclasses it with its data fields and names its datasets in the class constant
``DATA`` (a :class:`StudyData`), which the stages of :mod:`graftkit.study.calm_kv_real_stages` read.
:func:`load_file_settings` resolves defaults, a YAML study file and ``key=value`` overrides into one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from graftkit.compose.recipe import OptimRecipe, apply_overrides
from graftkit.compose.wiring import Connection
from graftkit.errors import RecipeError
from graftkit.yaml_input import explain, read_mapping
from graftkit.zoo.train import TrainConfig

ABLATIONS = ("random_m_A", "untrained_m_A", "encoder", "lora")
"""The paper's Table 5 ablations: random-weight m_A, same-size m_A never shown the study's data, a bridge
trained and decoded in encoder mode, LoRA on m_B with the bridge's parameter count and data."""


class StudyData(NamedTuple):
    """What a real-anchor study is called and which of its datasets each stage uses."""

    study: str
    """The result's ``study`` entry, e.g. ``calm_kv_real``."""
    title: str
    """The prefix of progress labels, e.g. ``calm-kv real``."""
    augment_task: str
    """The dataset ``m_A`` trains on."""
    anchor_task: str
    """The dataset ``m_B`` (the anchor) is fine-tuned on."""
    composition: str
    """The bridges' and LoRA's training data."""
    datasets: tuple[str, ...]
    """What every row is scored on."""


class Frozen(BaseModel):
    """A frozen pydantic model that refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AugmentShape(Frozen):
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


class RealAnchorSettings(Frozen):
    """What every real-anchor CALM study decides (its unit keys hash these); subclasses add their data
    fields, implement :meth:`data_spec` and set ``DATA`` (the study's name and datasets)."""

    DATA: ClassVar[StudyData]

    anchor: str = Field("smollm2", description="a `graft zoo import` name, used when anchor_path is not set")
    anchor_path: Path | None = Field(None, description="a model folder used as the anchor instead (a stand-in)")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="full replicates: data, models, bridges")
    ops: str = Field("+-", min_length=1)
    question: str = Field(..., description="the chat question; the study's slot is replaced")

    augment: AugmentShape = AugmentShape()
    augment_train: TrainConfig = TrainConfig(steps=1000, batch_size=32, seq_len=64, lr=2e-3, warmup_steps=100)
    untrained_train: TrainConfig = TrainConfig(steps=600, batch_size=16, seq_len=64, lr=2e-3, warmup_steps=50)
    """Zoo text (never the study's data) for the same-size ``m_A`` of the ``untrained_m_A`` ablation."""
    anchor_train: TrainConfig = TrainConfig(steps=400, batch_size=16, seq_len=64, lr=3e-4, warmup_steps=40)
    anchor_freeze: tuple[str, ...] = ("embed_tokens",)
    bf16: bool = Field(True, description="bfloat16 autocast for m_B, the bridges, LoRA and scoring")

    connections: tuple[Connection, ...] | None = Field(None, description="None: the paper's default wiring")
    bridge: OptimRecipe = OptimRecipe(lr=1e-3, steps=300, warmup=30, batch_size=16)
    n_composition: int = Field(4000, ge=1, description="distinct composition examples (train split) at most")
    ablations: tuple[str, ...] = ABLATIONS
    n_eval: int = Field(100, ge=1, description="test examples per dataset")
    max_new_tokens: int = Field(16, ge=1)
    threads: int = Field(2, ge=1)
    device: str = "cpu"

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: str) -> str:
        if set(ops) - set("+-*"):
            raise ValueError(f"ops may hold only + - * (got {ops!r})")
        return ops

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

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {list(seeds)}")
        return seeds

    @field_validator("connections")
    @classmethod
    def _within_augment(cls, connections: tuple[Connection, ...] | None, info: ValidationInfo) -> Any:
        layers = info.data["augment"].layers if "augment" in info.data else None  # validated before connections
        bad = [c for c in connections or () if layers is not None and c.augment_layer >= layers]
        if bad:
            raise ValueError(f"connections {bad} name augment layers beyond augment.layers={layers}")
        return connections

    def data_spec(self, seed: int) -> dict[str, Any]:
        """The unit inputs that name one replicate's datasets (see :func:`~graftkit.study.calm_kv_chat.datasets_of`)."""
        raise NotImplementedError


def need_slot(question: str, slot: str, example: str) -> str:
    """``question`` if it holds ``{slot}`` (and no other ``{...}`` field); else a ValueError showing ``example``."""
    import string

    fields = {name for _, name, _, _ in string.Formatter().parse(question) if name is not None}
    if fields != {slot}:
        raise ValueError(f"the question needs one {{{slot}}} slot and no other braces, e.g. {example!r}")
    return question


S = TypeVar("S", bound=RealAnchorSettings)


def tiny_fields() -> dict[str, Any]:
    """Fields of the studies' tiny test variants: two seeds, an 8-layer hidden-16 m_A, a few steps each."""
    tiny = TrainConfig(steps=3, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=1)
    return {
        "seeds": (0, 1),
        "augment": AugmentShape(hidden=16, layers=8, heads=2, intermediate=32),
        "augment_train": tiny,
        "untrained_train": tiny,
        "anchor_train": tiny,
        "bf16": False,
        "bridge": OptimRecipe(lr=1e-3, steps=2, warmup=1, batch_size=4),
        "n_composition": 12,
        "n_eval": 3,
        "max_new_tokens": 4,
        "threads": 1,
    }


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values, sections merged key by key (a file sets only what it changes)."""
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if nested else value
    return out


def load_file_settings(cls: type[S], base: S, overrides: Sequence[str], title: str) -> S:
    """``base``, then the YAML file that a ``file=PATH`` override names, then the other dotted ``key=value``
    overrides, validated as ``cls``.

    Raises:
        RecipeError: the file cannot be read, or a field is wrong (each named by its dotted path, under ``title``).
    """
    files = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "file"]
    rest = [o for o in overrides if o.partition("=")[0].strip() != "file"]
    data = base.model_dump(mode="json")
    for path in files:
        data = _merged(data, read_mapping(Path(path), f"fields of {cls.__name__}"))
    try:
        return cls.model_validate(apply_overrides(data, rest))
    except ValidationError as err:
        raise RecipeError(explain(err, title)) from None
