"""Find the decoder blocks, sizes and norm type of a Hugging Face causal LM without subclassing it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from graftkit.errors import GraftError

# Where the common families keep their stack of decoder blocks.
_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Phi-3
    "transformer.h",  # GPT-2, GPT-J, Falcon
    "model.decoder.layers",  # OPT
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "transformer.blocks",  # MPT
)


@dataclass(frozen=True)
class NormSpec:
    """The normalisation a bridge builds for an anchor: ``rms`` (RMSNorm) or ``layer`` (LayerNorm)."""

    kind: Literal["rms", "layer"]
    eps: float

    def build(self, dim: int) -> nn.Module:
        if self.kind == "rms":
            return nn.RMSNorm(dim, eps=self.eps)
        return nn.LayerNorm(dim, eps=self.eps)


@dataclass(frozen=True, eq=False)
class DecoderStack:
    """What the bridge needs to know about one causal LM.

    Attributes:
        backbone: the model without its LM head (``model.base_model``); the augment runs through it.
        layers: the decoder blocks, in order.
        path: attribute path of ``layers`` inside the causal LM (for messages).
    """

    backbone: nn.Module
    layers: nn.ModuleList
    path: str
    hidden_size: int
    num_heads: int
    vocab_size: int
    norm: NormSpec

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _get(model: nn.Module, path: str) -> nn.Module | None:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def _find_layers(model: nn.Module, num_layers: int | None) -> tuple[str, nn.ModuleList]:
    for path in _LAYER_PATHS:
        found = _get(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    # Any other family: the one ModuleList as long as the configured layer count.
    matches = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and num_layers is not None and len(mod) == num_layers
    ]
    if len(matches) == 1:
        return matches[0]
    raise GraftError(
        f"Cannot find the decoder blocks of {type(model).__name__}: tried {', '.join(_LAYER_PATHS)} and "
        f"found {len(matches)} ModuleList(s) of length {num_layers}. Composition supports Hugging Face "
        "causal LMs whose decoder blocks live in one nn.ModuleList."
    )


def _find_norm(block: nn.Module) -> NormSpec:
    for mod in block.modules():
        if isinstance(mod, nn.LayerNorm):
            return NormSpec("layer", float(mod.eps))
        if type(mod).__name__.endswith("RMSNorm") or isinstance(mod, nn.RMSNorm):
            eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", None) or 1e-6
            return NormSpec("rms", float(eps))
    raise GraftError(f"Cannot find a LayerNorm or RMSNorm inside {type(block).__name__}.")


def discover(model: nn.Module) -> DecoderStack:
    """Describe a Hugging Face causal LM (Llama, Mistral, Qwen2, GPT-2, …) for composition.

    Raises:
        GraftError: the model has no ``config`` with the sizes needed, or no findable decoder stack.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise GraftError(f"{type(model).__name__} has no .config; compose Hugging Face causal LMs.")
    try:
        hidden, heads, vocab = config.hidden_size, config.num_attention_heads, config.vocab_size
    except AttributeError as err:
        raise GraftError(f"{type(model).__name__}.config lacks {err.name!r}, needed to build a bridge.") from None
    path, layers = _find_layers(model, getattr(config, "num_hidden_layers", None))
    backbone = getattr(model, "base_model", model)
    return DecoderStack(backbone, layers, path, int(hidden), int(heads), int(vocab), _find_norm(layers[0]))
