"""A PEFT LoRA adapter's ``adapter_config.json``: parsed, checked, and its per-module rank and scale.

Only what decides ΔW is read: ``r``, ``lora_alpha``, ``rank_pattern``, ``alpha_pattern``,
``use_rslora`` and ``fan_in_fan_out``. Options under which an adapter is not ``base + ΔW`` with
``ΔW = scale · B A`` (DoRA, trained biases, ``modules_to_save``, other PEFT types …) are refused by
name, each with what to do instead.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graftkit.errors import CheckpointError
from graftkit.yaml_input import explain

ADAPTER_CONFIG = "adapter_config.json"

_MERGE_FIRST = (
    "merge it into its base with PEFT (`PeftModel.from_pretrained(base, ADAPTER).merge_and_unload()`, "
    "then `save_pretrained(DIR)`) and list DIR in the recipe instead"
)


class AdapterConfig(BaseModel):
    """The fields of a PEFT ``LoraConfig`` that decide ΔW; every other field is kept but unused.

    Attributes:
        r: the default rank.
        lora_alpha: the default alpha; ``scale = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
        rank_pattern, alpha_pattern: module-name pattern → rank / alpha overrides, matched as
            PEFT matches them (the first key that ends the module name at a dot boundary).
        fan_in_fan_out: the base stores its weights as (in, out) (GPT-2's ``Conv1D``): ΔW = (B A)ᵀ.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    peft_type: str = "LORA"
    r: int = Field(8, ge=1)
    lora_alpha: float = 8.0
    rank_pattern: dict[str, int] = Field(default_factory=dict)
    alpha_pattern: dict[str, float] = Field(default_factory=dict)
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    target_modules: list[str] | str | None = None
    base_model_name_or_path: str | None = None

    def rank(self, module: str) -> int:
        """The rank PEFT gives ``module`` (e.g. ``"model.layers.0.self_attn.q_proj"``)."""
        key = _pattern_key(self.rank_pattern, module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha(self, module: str) -> float:
        key = _pattern_key(self.alpha_pattern, module)
        return float(self.alpha_pattern[key]) if key is not None else self.lora_alpha

    def scale(self, module: str) -> float:
        """``alpha / r`` for ``module``, or ``alpha / sqrt(r)`` with ``use_rslora``."""
        r = self.rank(module)
        return self.alpha(module) / (math.sqrt(r) if self.use_rslora else r)


def _pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    # PEFT: the first pattern that matches the whole name or a suffix starting after a dot
    return next((key for key in patterns if re.match(rf"(.*\.)?({key})$", module)), None)


# Field → (is it set?, why graftkit cannot take the adapter as base + scale·BA).
_REFUSED: dict[str, tuple[Any, str]] = {
    "use_dora": (bool, "DoRA rescales each column of base + ΔW by a learned magnitude"),
    "modules_to_save": (bool, "it stores whole trained modules beside the low-rank factors"),
    "lora_bias": (bool, "its lora_B has a trained bias"),
    "bias": (lambda v: v not in (None, "none"), "it stores trained biases"),
    "target_parameters": (bool, "it adapts nn.Parameters (MoE experts), not modules"),
    "layer_replication": (bool, "it stacks replicated layers, so the model has more layers than its base"),
    "trainable_token_indices": (bool, "it trains embedding rows beside the low-rank factors"),
    "alora_invocation_tokens": (bool, "aLoRA applies its ΔW only after the invocation tokens"),
    "use_qalora": (bool, "QALoRA pools its inputs before A"),
    "use_bdlora": (bool, "BD-LoRA factors are block-diagonal"),
    "kasa_config": (bool, "KaSA inserts a learned diagonal between A and B and truncates the base"),
    "monteclora_config": (bool, "MonteCLoRA samples its factors"),
    "arrow_config": (bool, "Arrow routes between adapters per token"),
}
_CONVERTED_INITS = ("pissa", "olora", "corda", "loftq", "lora-ga", "lora_ga")


def read_adapter_config(folder: Path) -> AdapterConfig:
    """Parse and check ``folder/adapter_config.json``.

    Raises:
        CheckpointError: unreadable JSON, a wrong field type, a PEFT type other than LORA, or an
            option under which the adapter is not base + ΔW (the message names the field).
    """
    path = folder / ADAPTER_CONFIG
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: is not readable JSON ({err}). Save the adapter again.") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: must be a JSON object (a PEFT adapter config).")
    try:
        config = AdapterConfig.model_validate(raw)
    except ValidationError as err:
        raise CheckpointError(explain(err, f"{path} is not a valid LoRA adapter config")) from None
    _refuse_unsupported(config, path)
    return config


def _refuse_unsupported(config: AdapterConfig, path: Path) -> None:
    if config.peft_type.upper() != "LORA":
        raise CheckpointError(
            f"{path}: `peft_type` is {config.peft_type!r}; graftkit reads LoRA adapters (peft_type LORA) only. "
            f"To merge this {config.peft_type} adapter, {_MERGE_FIRST}."
        )
    extra = config.model_extra or {}
    for field, (is_set, why) in _REFUSED.items():
        value = extra.get(field)
        if value is not None and is_set(value):
            raise CheckpointError(
                f"{path}: `{field}` is {json.dumps(value)}, and graftkit takes a LoRA adapter as base + "
                f"scale·B·A only; {why}. To merge this adapter, {_MERGE_FIRST}."
            )
    init = str(extra.get("init_lora_weights", "")).lower()
    if init.startswith(_CONVERTED_INITS):
        raise CheckpointError(
            f"{path}: `init_lora_weights` is {init!r}: this adapter's factors apply to a base whose weights "
            "PEFT changed at initialisation, not to the original base. Save it again with "
            "`save_pretrained(DIR, path_initial_model_for_weight_conversion=...)` so it applies to the "
            f"original base, or {_MERGE_FIRST}."
        )
