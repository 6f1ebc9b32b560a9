"""Plan a merge from tensor metadata alone: which tensors, from where, in which dtype.

Every check that needs only headers and configs happens here, before any weight is read:
missing and extra tensors, shape and vocabulary mismatches, quantized inputs, layer counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from graftkit.errors import CheckpointError
from graftkit.merge.params import layer_index
from graftkit.merge.preflight import HEAD_NAMES, check_configs, check_layer_lists, is_tied, untie_where_needed
from graftkit.merge.sources import TensorSource
from graftkit.merge.validate import ResolvedRecipe

DTYPE_BY_NAME = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class TensorJob:
    """One output tensor.

    Attributes:
        name: tensor name in every input and in the output.
        shape: its shape.
        out_dtype: the dtype it is stored in.
        experts: indices (into the recipe's models) of the experts that contribute.
        merge: False for non-float tensors, copied from the reference model unchanged.
        nbytes_in: bytes read to produce it (for progress and throughput).
        stats: whether the method reads each contributing expert's statistic of this tensor
            (methods with ``needs_stats``; see :mod:`graftkit.merge.stats_sources`).
    """

    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    experts: tuple[int, ...]
    merge: bool
    nbytes_in: int
    stats: bool = False


@dataclass
class MergePlan:
    """Everything the executor needs; built by :func:`build_plan`."""

    resolved: ResolvedRecipe
    base: TensorSource | None
    experts: list[TensorSource]
    labels: list[str]
    jobs: list[TensorJob]
    n_layers: int
    out_dtype: torch.dtype | None
    warnings: list[str] = field(default_factory=list)
    stats: list[TensorSource | None] | None = None
    """Per expert, its statistics for a method with ``needs_stats`` (None: not computed yet)."""

    @property
    def reference(self) -> TensorSource:
        """The model whose tensor list, config and tokenizer the output follows."""
        return self.base if self.base is not None else self.experts[0]

    @property
    def total_in_bytes(self) -> int:
        return sum(job.nbytes_in for job in self.jobs)

    @property
    def total_out_bytes(self) -> int:
        return sum(_numel(j.shape) * _itemsize(j.out_dtype) for j in self.jobs)


def build_plan(
    resolved: ResolvedRecipe,
    base: TensorSource | None,
    experts: Sequence[TensorSource],
    labels: Sequence[str],
) -> MergePlan:
    """Check the inputs against each other and list the output tensors.

    Args:
        resolved: the validated recipe.
        base: the base model (None for methods without one).
        experts: the experts, in recipe order.
        labels: display names, base first when there is one, then the experts.

    Raises:
        CheckpointError: missing/extra tensors (per ``on_missing``), shape mismatches.
    """
    reference = base if base is not None else experts[0]
    # one config per label: the base (if any), then every expert (the first is the reference without a base)
    check_configs(([base.config] if base is not None else []) + [e.config for e in experts], labels)
    experts = untie_where_needed(reference, list(experts))
    out_dtype = DTYPE_BY_NAME.get(resolved.recipe.storage_dtype or "")
    on_missing = resolved.recipe.on_missing
    expert_labels = list(labels[1:] if base is not None else labels)
    ref_label = labels[0]
    problems: list[str] = []
    warnings: list[str] = []
    missing: dict[int, list[str]] = {}
    jobs = []
    if not reference.tensors:
        raise CheckpointError(
            f"{ref_label} holds no tensors, so there is nothing to merge. Check that it is the right "
            "checkpoint (its weight files may be empty or not downloaded)."
        )
    for name, meta in reference.tensors.items():
        present = []
        for i, expert in enumerate(experts):
            other = expert.tensors.get(name)
            if other is None:
                if on_missing == "error":
                    problems.append(f"- tensor `{name}` is in {ref_label} but missing from {expert_labels[i]}")
                    continue
                missing.setdefault(i, []).append(name)
                if on_missing == "base" and base is not None:
                    present.append(i)  # read from the base instead: a zero delta
                continue
            if tuple(other.shape) != tuple(meta.shape):
                problems.append(_shape_problem(name, ref_label, meta.shape, expert_labels[i], other.shape))
                continue
            present.append(i)
        is_float = meta.dtype.is_floating_point
        merge = is_float and bool(present)
        dtype = (out_dtype or meta.dtype) if merge else meta.dtype
        read = [meta] + [experts[i].tensors.get(name) or meta for i in present] if merge else [meta]
        nbytes = sum(_numel(m.shape) * _itemsize(m.dtype) for m in read)
        jobs.append(TensorJob(name, tuple(meta.shape), dtype, tuple(present), merge, nbytes))
    _note_missing(missing, expert_labels, ref_label, on_missing, warnings)
    _check_extras(reference, experts, expert_labels, ref_label, on_missing, problems, warnings)
    _note_dtypes(reference, experts, warnings)
    if problems:
        shown = problems[:20] + ([f"- … and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise CheckpointError(
            "The models cannot be merged tensor by tensor:\n" + "\n".join(shown) + "\n"
            "Merge only checkpoints of the same architecture and size; for missing tensors set "
            "`on_missing: base` (use the base's tensor) or `on_missing: skip` (merge the others)."
        )
    n_layers = count_layers(reference.config, reference.tensors)
    # The lists as the user wrote them (before defaults spread global values to every model), so
    # that an error names the place in the recipe to edit.
    written = [resolved.recipe.parameters, *(m.parameters for m in resolved.recipe.models)]
    places = ["parameters"] + [f"models[{i}].parameters" for i in range(len(resolved.recipe.models))]
    check_layer_lists(written, n_layers, places)
    return MergePlan(resolved, base, list(experts), list(labels), jobs, n_layers, out_dtype, warnings)


def count_layers(config: dict[str, Any] | None, names: Any) -> int:
    """Number of decoder layers, from the config or else from tensor names."""
    for key in _LAYER_KEYS:
        if config and isinstance(config.get(key), int):
            return int(config[key])
    indices = [i for i in (layer_index(n) for n in names) if i is not None]
    return max(indices) + 1 if indices else 1


def _shape_problem(name: str, a: str, shape_a: Any, b: str, shape_b: Any) -> str:
    line = f"- tensor `{name}` has shape {list(shape_a)} in {a} but {list(shape_b)} in {b}"
    if any(key in name for key in ("embed", "wte", "lm_head", "word_embeddings")) and shape_a[1:] == shape_b[1:]:
        line += (
            f" (vocabulary size {shape_a[0]} vs {shape_b[0]}: the tokenizers differ; resize the embeddings "
            "to one vocabulary, e.g. `model.resize_token_embeddings(n)`, or merge models that share a tokenizer)"
        )
    return line


def _note_missing(missing: dict[int, list[str]], labels, ref_label, on_missing, warnings) -> None:
    """With ``on_missing: base | skip`` a missing tensor is not an error, but it is never silent."""
    how = (
        f"{ref_label}'s tensor is used in its place (a zero task vector)"
        if on_missing == "base"
        else "it is merged from the other models only"
    )
    for i, names in sorted(missing.items()):
        listed = ", ".join(f"`{n}`" for n in names[:8]) + (" …" if len(names) > 8 else "")
        warnings.append(
            f"{labels[i]} lacks {len(names)} tensor(s) of {ref_label}: {listed}; {how} (on_missing: {on_missing})."
        )


def _check_extras(reference, experts, labels, ref_label, on_missing, problems, warnings) -> None:
    for i, expert in enumerate(experts):
        extra = sorted(set(expert.tensors) - set(reference.tensors))
        if not extra:
            continue
        listed = ", ".join(f"`{n}`" for n in extra[:8]) + (" …" if len(extra) > 8 else "")
        message = f"{labels[i]} has {len(extra)} tensor(s) that {ref_label} lacks: {listed}"
        heads = [n for n in extra if n in HEAD_NAMES]
        if heads and is_tied(reference.config, reference.tensors):
            message += (
                f" ({ref_label} ties its output head to its input embedding (`tie_word_embeddings`) "
                f"but {labels[i]} has a separate `{heads[0]}`; merge models that agree on tying, or "
                f"make {labels[i]} the base so the output keeps an untied head)"
            )
        if on_missing == "error":
            problems.append(f"- {message}")
        else:
            warnings.append(f"{message}; they are not in the output (the output follows {ref_label}).")


def _note_dtypes(reference, experts, warnings) -> None:
    dtypes = {m.dtype for src in (reference, *experts) for m in src.tensors.values() if m.dtype.is_floating_point}
    if len(dtypes) > 1:
        names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        warnings.append(f"inputs mix dtypes ({names}); every tensor is merged in float32.")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
