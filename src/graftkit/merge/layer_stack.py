"""Plan a layer stack: every output tensor, the slice it is copied from and its name there.

Output layer i is source layer j of its slice's model, renamed (``layers.j.`` → ``layers.i.``).
Tensors outside numbered layers follow mergekit's planner: the embeddings (names with
``embed``, ``wte``, ``wpe``) come from the first slice's model, every other one (final norm,
output head) from the last slice's. The config is the first slice's model's, with the layer
count and every per-layer list (such as ``layer_types``) taken layer by layer from the sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graftkit.errors import CheckpointError
from graftkit.merge.params import LAYER_KEYS, count_layers, layer_index, with_layer
from graftkit.merge.plan_types import MergePlan, TensorJob, _itemsize, _numel
from graftkit.merge.preflight import CONFIG_KEYS, check_configs
from graftkit.merge.sources import TensorSource
from graftkit.merge.stack_recipe import LayerStack
from graftkit.merge.validate import ResolvedRecipe

_INPUT_SIDE = ("embed", "wte", "wpe")  # non-layer tensors that come before the first layer


def build_stack_plan(resolved: ResolvedRecipe, sources: Sequence[TensorSource], labels: Sequence[str]) -> MergePlan:
    """The jobs of a layer stack (source k is slice k's model).

    Raises:
        CheckpointError: models of other architectures, or a range beyond its model's layers.
    """
    stack = resolved.stack
    assert stack is not None
    check_configs([s.config for s in sources], labels, keys=CONFIG_KEYS[:3])  # layer counts may differ
    _check_ranges(stack, sources, labels)
    from graftkit.merge.plan import DTYPE_BY_NAME

    out_dtype = DTYPE_BY_NAME.get(resolved.recipe.storage_dtype or "")
    first, last = sources[0], sources[-1]
    jobs = [_copy(n, n, 0, first, out_dtype) for n in first.tensors if _outside(n) and _input_side(n)]
    for out_layer, k, layer in stack.layers():
        names = [n for n in sources[k].tensors if layer_index(n) == layer]
        jobs += [_copy(with_layer(n, out_layer), n, k, sources[k], out_dtype) for n in names]
    jobs += [_copy(n, n, len(sources) - 1, last, out_dtype) for n in last.tensors if _outside(n) and not _input_side(n)]
    plan = MergePlan(resolved, None, list(sources), list(labels), jobs, stack.n_layers, out_dtype)
    plan.config_updates = stack_config(stack, [s.config or {} for s in sources])
    plan.summary = describe_stack(stack, labels)
    return plan


def _outside(name: str) -> bool:
    return layer_index(name) is None


def _input_side(name: str) -> bool:
    return any(key in name for key in _INPUT_SIDE)


def _copy(name: str, source_name: str, k: int, source: TensorSource, out_dtype) -> TensorJob:
    meta = source.tensors[source_name]
    is_float = meta.dtype.is_floating_point
    dtype = (out_dtype or meta.dtype) if is_float else meta.dtype
    nbytes = _numel(meta.shape) * _itemsize(meta.dtype)
    return TensorJob(name, tuple(meta.shape), dtype, (k,), is_float, nbytes, source=source_name)


def _check_ranges(stack: LayerStack, sources: Sequence[TensorSource], labels: Sequence[str]) -> None:
    problems = []
    for k, (piece, source) in enumerate(zip(stack.slices, sources, strict=True)):
        n = count_layers(source.config, source.tensors)
        if piece.end > n:
            problems.append(
                f"- `{LayerStack.place(k)}.layer_range` [{piece.start}, {piece.end}]: {labels[k]} has {n} layers "
                f"(0 to {n - 1}); the end is exclusive, so it may be at most {n}."
            )
    if problems:
        raise CheckpointError("The layer stack does not fit its models:\n" + "\n".join(problems))


def stack_config(stack: LayerStack, configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The config keys a stack changes: the layer count, and each per-layer list, layer by layer.

    A per-layer list is a list-valued key of the first model's config as long as its layer count
    (``architectures`` excepted); output layer i takes the entry of its source layer in its
    slice's model (or in the first model's list when that model lacks the key).
    """
    first = configs[0]
    key = next((k for k in LAYER_KEYS if isinstance(first.get(k), int)), "num_hidden_layers")
    n_first = count_layers(first, ())
    updates: dict[str, Any] = {key: stack.n_layers}
    for name, value in first.items():
        if name == "architectures" or not isinstance(value, list) or len(value) != n_first:
            continue
        updates[name] = [_entry(configs[k], name, layer, value) for _, k, layer in stack.layers()]
    return updates


def _entry(config: dict[str, Any], name: str, layer: int, fallback: list) -> Any:
    own = config.get(name)
    if isinstance(own, list) and layer < len(own):
        return own[layer]
    return fallback[min(layer, len(fallback) - 1)]


def describe_stack(stack: LayerStack, labels: Sequence[str]) -> list[str]:
    """``graft validate``'s layer plan: one line per output layer, then where the rest comes from."""
    lines = [f"  layer stack: {stack.n_layers} output layers from {len(stack.slices)} slices"]
    lines += [f"    layer {i} ← {labels[k]} layer {layer}" for i, k, layer in stack.layers()]
    lines.append(
        f"  embeddings from {labels[0]} (first slice); every other tensor outside the layers (final norm, "
        f"head) from {labels[-1]} (last slice)"
    )
    return lines
