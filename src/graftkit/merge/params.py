"""Resolve a recipe parameter to one number for one tensor.

A parameter value is a scalar, a per-layer list (piecewise-linear over the model's layers:
layer ``l`` of ``L`` sits at ``t = l / (L − 1)``; tensors outside numbered layers take the first
value), or a list of ``{filter, value}`` entries where the first match wins (substring, or glob
when the filter has ``*?[``; an entry without ``filter`` matches every tensor).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import Any

from graftkit.merge.recipe import FilterValue

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def layer_index(tensor_name: str) -> int | None:
    """The decoder-layer number a tensor belongs to, or None (embeddings, final norm, head)."""
    match = _LAYER.search(tensor_name)
    return int(match.group(1)) if match else None


def with_layer(tensor_name: str, layer: int) -> str:
    """``tensor_name`` with its decoder-layer number replaced by ``layer`` (it must have one)."""
    match = _LAYER.search(tensor_name)
    if match is None:
        raise ValueError(f"{tensor_name!r} belongs to no numbered layer")
    return tensor_name[: match.start(1)] + str(layer) + tensor_name[match.end(1) :]


LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def count_layers(config: dict[str, Any] | None, names: Any) -> int:
    """Number of decoder layers, from the config or else from tensor names."""
    for key in LAYER_KEYS:
        if config and isinstance(config.get(key), int):
            return int(config[key])
    indices = [i for i in (layer_index(n) for n in names) if i is not None]
    return max(indices) + 1 if indices else 1


def filter_matches(pattern: str | None, tensor_name: str) -> bool:
    if pattern is None:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(tensor_name, pattern)
    return pattern in tensor_name


def interpolate(values: list[float], layer: int | None, n_layers: int) -> float:
    """Piecewise-linear value of a per-layer list at ``layer`` of ``n_layers``."""
    if layer is None or len(values) == 1 or n_layers <= 1:
        return float(values[0])
    position = layer / (n_layers - 1) * (len(values) - 1)
    low = min(int(position), len(values) - 2)
    frac = position - low
    return float(values[low] * (1.0 - frac) + values[low + 1] * frac)


def resolve(value: Any, tensor_name: str, n_layers: int, default: Any = None) -> Any:
    """The scalar a parameter takes for ``tensor_name`` (``default`` when no filter matches)."""
    if isinstance(value, list) and value and isinstance(value[0], FilterValue):
        for entry in value:
            if filter_matches(entry.filter, tensor_name):
                return resolve(entry.value, tensor_name, n_layers, default)
        return default
    if isinstance(value, list):
        return interpolate([float(v) for v in value], layer_index(tensor_name), n_layers)
    return value


def scalars_in(value: Any) -> Iterator[Any]:
    """Every scalar a parameter value can take, for range checks before any tensor is read."""
    if isinstance(value, list):
        for item in value:
            yield from scalars_in(item.value if isinstance(item, FilterValue) else item)
    else:
        yield value
