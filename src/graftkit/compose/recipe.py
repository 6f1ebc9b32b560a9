"""The bridge-training recipe: YAML parsed into frozen, typed models, with ``key=value`` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from graftkit.compose.wiring import Connection
from graftkit.errors import RecipeError
from graftkit.yaml_input import explain, read_mapping


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AugmentRecipe(_Frozen):
    """One augmenting model: its checkpoint folder and, optionally, explicit connections."""

    path: str
    connections: list[Connection] | None = None  # None: the paper's every-4th-layer wiring


class DataRecipe(_Frozen):
    """JSONL files of ``{"prompt": ..., "completion": ...}``; the loss is on completion tokens."""

    train: str
    eval: str | None = None
    max_length: PositiveInt = 256
    append_eos: bool = True


class OptimRecipe(_Frozen):
    """AdamW on the bridge, linear warm-up then cosine decay to ``min_lr_ratio · lr``."""

    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    steps: PositiveInt = 1000
    warmup: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    max_grad_norm: float | None = 1.0


class BridgeRecipe(_Frozen):
    """Everything :func:`graftkit.compose.train.train_bridge` needs.

    ``bf16``: bfloat16 autocast for the forward passes. ``"auto"`` (default) turns it on on CUDA
    devices that support bfloat16 and off elsewhere; ``true`` turns it on on any device (CPU autocast
    included); ``false`` turns it off. The bridge's weights and optimiser state stay float32 either way.
    The frozen models are loaded in ``dtype``.
    """

    anchor: str
    augments: list[AugmentRecipe] = Field(min_length=1)
    tokenizer: str | None = None  # default: the anchor folder
    data: DataRecipe
    optim: OptimRecipe = OptimRecipe()
    output: str
    eval_every: PositiveInt = 100
    checkpoint_every: PositiveInt = 500
    seed: int = 0
    bf16: bool | Literal["auto"] = "auto"
    encoder_mode: bool = False
    """Train for encoder-mode decoding (the paper's ablation): the augments read only the prompt, so
    every completion position is masked out of the bridge's keys (see :func:`~graftkit.compose.data.prompt_mask`)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str | None = None  # default: cuda if available, else cpu
    progress: bool = True


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted ``key=value`` pairs (``optim.lr=3e-4``) in a nested dict; values are parsed as YAML."""
    out = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"Override {item!r} is not key=value (e.g. optim.lr=3e-4).")
        *parents, leaf = key.strip().split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"Override {item!r}: {p!r} is not a section.")
        node[leaf] = yaml.safe_load(raw)
    return out


def load_recipe(source: str | Path | dict[str, Any] | BridgeRecipe, overrides: Sequence[str] = ()) -> BridgeRecipe:
    """Parse a recipe (YAML path, dict or recipe) and apply overrides.

    Raises:
        RecipeError: missing file, bad YAML, or field errors (each named by its dotted path).
    """
    if isinstance(source, BridgeRecipe):
        data = source.model_dump(mode="json")
    elif isinstance(source, dict):
        data = source
    else:
        data = read_mapping(Path(source), "`anchor`, `augments`, `data`, `output`")
    data = apply_overrides(data, overrides)
    try:
        return BridgeRecipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(explain(err, "The bridge recipe has errors")) from None
