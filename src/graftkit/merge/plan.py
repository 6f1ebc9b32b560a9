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
from graftkit.merge.params import count_layers
from graftkit.merge.plan_types import MergePlan, TensorJob, _itemsize, _numel
from graftkit.merge.preflight import HEAD_NAMES, check_configs, check_layer_lists, is_tied, untie_where_needed
from graftkit.merge.sources import TensorSource
from graftkit.merge.validate import ResolvedRecipe
from graftkit.merge.vocab import VocabPlan, plan_vocab

DTYPE_BY_NAME = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

__all__ = ["DTYPE_BY_NAME", "MergePlan", "TensorJob", "build_plan", "count_layers"]


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
    if resolved.stack is not None:
        from graftkit.merge.layer_stack import build_stack_plan

        return build_stack_plan(resolved, experts, labels)
    reference = base if base is not None else experts[0]
    # one config per label: the base (if any), then every expert (the first is the reference without a base)
    check_configs(([base.config] if base is not None else []) + [e.config for e in experts], labels)
    experts = untie_where_needed(reference, list(experts))
    if not reference.tensors:
        raise CheckpointError(
            f"{labels[0]} holds no tensors, so there is nothing to merge. Check that it is the right "
            "checkpoint (its weight files may be empty or not downloaded)."
        )
    vocab = plan_vocab(resolved, base, experts)
    check = _Checks(resolved.recipe.on_missing, base is not None, labels[0], list(labels[1:] if base else labels))
    out_dtype = DTYPE_BY_NAME.get(resolved.recipe.storage_dtype or "")
    jobs = [_job(name, meta, experts, check, out_dtype, vocab) for name, meta in reference.tensors.items()]
    _note_missing(check.missing, check.labels, check.ref_label, check.on_missing, check.warnings)
    _check_extras(reference, experts, check.labels, check.ref_label, check.on_missing, check.problems, check.warnings)
    _note_dtypes(reference, experts, check.warnings)
    if check.problems:
        problems = check.problems
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
    plan = MergePlan(resolved, base, list(experts), list(labels), jobs, n_layers, out_dtype, check.warnings)
    if vocab is not None:
        plan.vocab, plan.config_updates = vocab, dict(vocab.config_updates)
        plan.summary += vocab.summary
        plan.warnings += vocab.warnings
    return plan


@dataclass
class _Checks:
    """What the tensor-by-tensor checks need and what they find."""

    on_missing: str
    has_base: bool
    ref_label: str
    labels: list[str]  # the experts'
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: dict[int, list[str]] = field(default_factory=dict)


def _job(
    name: str,
    meta: Any,
    experts: Sequence[TensorSource],
    check: _Checks,
    out_dtype: torch.dtype | None,
    vocab: VocabPlan | None,
) -> TensorJob:
    """The job of one reference tensor; problems and missing tensors are noted in ``check``."""
    rows = vocab.rows_for(name) if vocab is not None else None
    shape = (vocab.n_rows, *meta.shape[1:]) if vocab is not None and name in vocab.names else tuple(meta.shape)
    present = []
    for i, expert in enumerate(experts):
        other = expert.tensors.get(name)
        if other is None:
            if check.on_missing == "error":
                check.problems.append(f"- tensor `{name}` is in {check.ref_label} but missing from {check.labels[i]}")
                continue
            check.missing.setdefault(i, []).append(name)
            if check.on_missing == "base" and check.has_base:
                present.append(i)  # read from the base instead: a zero delta
            continue
        aligned = vocab is not None and name in vocab.names  # rows may differ: they are matched by token
        if tuple(other.shape)[int(aligned) :] != tuple(meta.shape)[int(aligned) :]:
            check.problems.append(_shape_problem(name, check.ref_label, meta.shape, check.labels[i], other.shape))
            continue
        present.append(i)
    merge = meta.dtype.is_floating_point and bool(present)
    dtype = (out_dtype or meta.dtype) if merge else meta.dtype
    read = [meta] + [experts[i].tensors.get(name) or meta for i in present] if merge else [meta]
    nbytes = sum(_numel(m.shape) * _itemsize(m.dtype) for m in read)
    return TensorJob(name, shape, dtype, tuple(present), merge, nbytes, rows=rows)


def _shape_problem(name: str, a: str, shape_a: Any, b: str, shape_b: Any) -> str:
    line = f"- tensor `{name}` has shape {list(shape_a)} in {a} but {list(shape_b)} in {b}"
    if any(key in name for key in ("embed", "wte", "lm_head", "word_embeddings")) and shape_a[1:] == shape_b[1:]:
        line += (
            f" (vocabulary size {shape_a[0]} vs {shape_b[0]}: the tokenizers differ; add `tokenizer: {{source: "
            "union}` (every model's tokens) or `tokenizer: {source: base}` (the base's) to the recipe to match "
            "embedding rows by token, or merge models that share a tokenizer)"
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
