"""Model size presets: small ``LlamaForCausalLM`` shapes over the zoo's character vocabulary.

Parameter counts (vocabulary 89, untied embeddings) are checked by a test against ``approx_params``.
``xs``–``l`` train on CPU; ``xl`` and ``xxl`` are meant for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from graftkit.errors import UnknownNameError

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Preset:
    """One model shape."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    approx_params: int
    max_positions: int = 256


PRESETS: dict[str, Preset] = {
    "xs": Preset(hidden=64, layers=4, heads=4, intermediate=176, approx_params=200_000),
    "s": Preset(hidden=128, layers=4, heads=4, intermediate=448, approx_params=1_000_000),
    "m": Preset(hidden=192, layers=8, heads=6, intermediate=576, approx_params=4_000_000),
    "l": Preset(hidden=384, layers=8, heads=6, intermediate=1152, approx_params=16_000_000),
    "xl": Preset(hidden=512, layers=20, heads=8, intermediate=1376, approx_params=64_000_000),
    "xxl": Preset(hidden=1024, layers=20, heads=16, intermediate=2816, approx_params=256_000_000),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError("model preset", name, list(PRESETS)) from None


def llama_config(preset: str, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The ``LlamaConfig`` of a preset, with the tokenizer's vocabulary and special ids."""
    from transformers import LlamaConfig

    p = get_preset(preset)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.heads,
        max_position_embeddings=p.max_positions,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def new_model(preset: str, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised model of a preset; the same ``seed`` gives the same weights."""
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(preset, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)
