"""Recipe models that are PEFT LoRA adapters: opened as ``base + ΔW`` experts over the recipe's base.

Every method then sees an adapter as the full expert it stands for, so mixed ranks and negative
weights combine full ΔWs, never A and B factors separately.
"""

from __future__ import annotations

from typing import Any

from graftkit.errors import RecipeError
from graftkit.io import Checkpoint
from graftkit.io.lora import LoraExpert, is_adapter
from graftkit.merge.recipe import ModelEntry, StatsRequest


def open_base(path: str) -> Checkpoint:
    """The recipe's ``base_model``, which must be a full model."""
    if is_adapter(path):
        raise RecipeError(
            f"`base_model`: {path} is a LoRA adapter, not a model. Name the model the adapter was trained on as "
            "`base_model` and list the adapter under `models:`."
        )
    return Checkpoint.open(path)


def open_expert(entry: ModelEntry, index: int, base: Checkpoint | None) -> Any:
    """A checkpoint, or for an adapter folder a :class:`LoraExpert` over ``base`` (headers only)."""
    if not is_adapter(entry.model):
        return Checkpoint.open(entry.model)
    if base is None:
        raise RecipeError(
            f"`models[{index}]`: {entry.model} is a LoRA adapter, so the recipe needs the model it was trained on "
            "as `base_model` (the adapter is read as base + ΔW)."
        )
    if isinstance(entry.stats, StatsRequest):
        raise RecipeError(
            f"`models[{index}].stats`: statistics are measured on a full model, and {entry.model} is an adapter. "
            f"Merge it first (`graft merge` of it alone, linear, weight 1), run `graft stats` on that folder and "
            "give the statistics folder as `stats:`."
        )
    return LoraExpert.open(entry.model, base)


def adapter_lines(experts: list[Any]) -> list[str]:
    """One ``graft validate`` line per adapter expert: rank, scale and target modules."""
    return [f"  {e.describe()}" for e in experts if isinstance(e, LoraExpert)]
