"""Header- and config-level checks that run before any weight is read.

Complements :mod:`graftkit.merge.plan` (tensor-level checks): architecture, sizes and tied
embeddings, and per-layer parameter lists against the model's layer count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import CheckpointError, GraftError, RecipeError
from graftkit.merge.recipe import FilterValue
from graftkit.merge.sources import TensorMeta, TensorSource

# (config keys that must agree, what to call it); the first key present in both is compared.
CONFIG_KEYS = (
    (("architectures",), "architecture"),
    (("model_type",), "model type"),
    (("hidden_size", "n_embd", "d_model"), "hidden size"),
    (("num_hidden_layers", "n_layer", "num_layers"), "layer count"),
)
HEAD_NAMES = ("lm_head.weight",)
EMBED_NAMES = (
    "model.embed_tokens.weight",
    "transformer.wte.weight",
    "embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
)


def check_configs(
    configs: Sequence[Mapping[str, Any] | None], labels: Sequence[str], keys: Sequence = CONFIG_KEYS
) -> None:
    """Refuse models whose architecture, hidden size or layer count (the ``keys``) differ from the first's."""
    problems = []
    reference, ref_label = configs[0], labels[0]
    for config, label in zip(configs[1:], labels[1:], strict=True):
        if not reference or not config:
            continue
        for names, what in keys:
            key = next((k for k in names if k in reference and k in config), None)
            if key is not None and reference[key] != config[key]:
                problems.append(f"- {what} (`{key}`): {reference[key]} in {ref_label} but {config[key]} in {label}")
    if problems:
        raise CheckpointError(
            "The models do not share an architecture, so their weights cannot be merged:\n"
            + "\n".join(problems)
            + "\nMerge fine-tunes of one base model; to combine different models use `graft compose`."
        )


def is_tied(config: Mapping[str, Any] | None, tensors: Mapping[str, TensorMeta]) -> bool:
    """True when the model ties its output head to its input embedding and stores only the latter."""
    tie = (config or {}).get("tie_word_embeddings", True)
    return bool(tie) and not any(name in tensors for name in HEAD_NAMES)


class TiedHead:
    """A source whose tied ``lm_head.weight`` reads as its input embedding (an alias, no copy)."""

    def __init__(self, source: TensorSource, head: str, embed: str) -> None:
        self._source, self._head, self._embed = source, head, embed
        self._tensors = {**source.tensors, head: source.tensors[embed]}

    @property
    def head(self) -> str:
        """The head's name, read as :attr:`embed`."""
        return self._head

    @property
    def embed(self) -> str:
        return self._embed

    @property
    def tensors(self) -> Mapping[str, TensorMeta]:
        return self._tensors

    @property
    def config(self) -> dict[str, Any] | None:
        return self._source.config

    def read(self, name: str) -> torch.Tensor:
        return self._source.read(self._embed if name == self._head else name)


def untie_where_needed(reference: TensorSource, experts: list[TensorSource]) -> list[TensorSource]:
    """When the reference has an untied head, give tied experts their embedding as their head.

    (When the reference is tied and an expert is not, the expert's extra ``lm_head.weight`` is
    reported by the plan's extra-tensor check rather than dropped.)
    """
    head = next((h for h in HEAD_NAMES if h in reference.tensors), None)
    if head is None:
        return experts
    out = []
    for expert in experts:
        embed = next((e for e in EMBED_NAMES if e in expert.tensors), None)
        if head not in expert.tensors and embed and is_tied(expert.config, expert.tensors):
            out.append(TiedHead(expert, head, embed))
        else:
            out.append(expert)
    return out


def check_layer_lists(params: Sequence[Mapping[str, Any]], n_layers: int, where: Sequence[str]) -> None:
    """A per-layer list may not have more entries than the model has layers."""
    problems = []
    for mapping, place in zip(params, where, strict=True):
        for name, value in mapping.items():
            for values in _layer_lists(value):
                if len(values) > max(n_layers, 1):
                    problems.append(
                        f"- `{place}.{name}` lists {len(values)} values but the model has {n_layers} layers; "
                        f"give at most {n_layers} values (they are interpolated over the layers)."
                    )
    if problems:
        raise RecipeError("Per-layer parameter lists do not fit the model:\n" + "\n".join(problems))


def _layer_lists(value: Any):
    if isinstance(value, list) and value and isinstance(value[0], FilterValue):
        for entry in value:
            yield from _layer_lists(entry.value)
    elif isinstance(value, list):
        yield value


def check_output_path(out: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse an output folder that is one of the inputs or contains one.

    Writing there (with ``--overwrite``) would delete a checkpoint the merge reads from.

    Raises:
        GraftError: ``out`` resolves to an input path or to a folder that holds one.
    """
    target = Path(out).expanduser().resolve()
    for item in inputs:
        source = Path(item).expanduser().resolve()
        if source == target or target in source.parents:
            raise GraftError(
                f"The output folder {str(out)!r} is (or contains) the input model {str(item)!r}; writing "
                "there would destroy an input. Choose an output folder outside every input."
            )
