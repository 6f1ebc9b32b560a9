"""The Python API: :func:`merge` for checkpoints, :func:`merge_state_dicts` for in-memory models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import RecipeError
from graftkit.merge.plan import build_plan
from graftkit.merge.recipe import ModelEntry, Recipe, parse_recipe
from graftkit.merge.run import MergeOptions, run_merge
from graftkit.merge.sources import DictSink, StateDictSource
from graftkit.merge.stats_sources import attach_stats
from graftkit.merge.validate import resolve_recipe

StateLike = Mapping[str, torch.Tensor] | torch.nn.Module


def merge(recipe: str | Path | dict[str, Any] | Recipe, out: str | Path, **options: Any) -> Path:
    """Merge the checkpoints a recipe names into a new Hugging Face checkpoint folder (or GGUF file).

    Args:
        recipe: a YAML path, YAML text, a dict, or a parsed :class:`Recipe`. Models may be HF
            folders, safetensors/.bin files or Llama ``.gguf`` files (dequantized as they are read).
        out: the output folder (a ``.gguf`` file with ``format="gguf"``); written to a temporary
            path beside it and renamed when complete.
        **options: :class:`graftkit.merge.run.MergeOptions` fields: ``device`` ("cpu"),
            ``seed`` (overrides the recipe's), ``overwrite`` (False), ``threads`` (torch intra-op
            threads), ``max_shard_size`` (bytes or "5GB"), ``progress`` (True), ``resume`` (False),
            ``durable`` (False: fsync the output before renaming it into place, for power-loss
            safety, at the cost of waiting for the disk), ``format`` ("safetensors" or "gguf"),
            ``gguf_type`` (with ``format="gguf"``: "f16" (default), "bf16" or "q8_0"). And
            ``as_lora`` (a rank): keep only the merge's difference from ``base_model``, as a PEFT
            LoRA adapter folder at ``out`` (see :func:`graftkit.merge.lora_out.merge_as_lora`).

    Returns:
        The output folder.

    Example:
        >>> graftkit.merge("ties.yaml", "out/merged", device="cpu")
    """
    parsed = recipe if isinstance(recipe, Recipe) else parse_recipe(recipe)
    as_lora = options.pop("as_lora", None)
    if as_lora is not None:
        from graftkit.merge.lora_out import merge_as_lora

        merge_as_lora(parsed, Path(out), int(as_lora), MergeOptions(**options))
        return Path(out)
    return run_merge(parsed, Path(out), MergeOptions(**options))


def merge_state_dicts(
    method: str,
    base: StateLike | None,
    experts: Sequence[StateLike],
    *,
    seed: int = 0,
    dare: dict[str, Any] | None = None,
    device: str = "cpu",
    out_dtype: str | None = None,
    stats: Sequence[Mapping[str, torch.Tensor]] | None = None,
    **params: Any,
) -> dict[str, torch.Tensor]:
    """Merge in-memory ``state_dict``s (or ``nn.Module``s) with the same math as :func:`merge`.

    Args:
        method: a registered merge method (see ``graft methods``).
        base: the base model, or None for methods without one.
        experts: the experts, in order.
        seed: seed for randomised methods.
        dare: options of the DARE pre-step, e.g. ``{"density": 0.1}``.
        device: where the math runs.
        out_dtype: "float32", "float16" or "bfloat16"; default: the base's dtype.
        stats: for ``fisher`` / ``regmean``, one statistics dict per expert (name → tensor, as
            ``graft stats`` writes them: ``fisher.safetensors`` / ``regmean.safetensors``).
        **params: method parameters. A per-expert parameter (``weight``, ``density``) may be a
            list with one value per expert; anything else applies to every expert.

    Returns:
        The merged ``state_dict`` (tensors on CPU).
    """
    from graftkit.merge.executor import execute

    n = len(experts)
    per_expert_names = {"weight"} | {p.name for p in _spec_params(method) if p.per_expert}
    expert_entries = []
    for i in range(n):
        chosen = {k: v[i] for k, v in params.items() if k in per_expert_names and _is_per_expert_list(v, n)}
        given = {"stats": f"statistics of expert {i} (in memory)"} if stats is not None else {}
        expert_entries.append(ModelEntry(model=f"expert_{i}", parameters=chosen, **given))
    shared = {k: v for k, v in params.items() if not (k in per_expert_names and _is_per_expert_list(v, n))}
    recipe = Recipe(
        merge_method=method,
        models=expert_entries,
        base_model="base" if base is not None else None,
        parameters=shared,
        dare=dare,
        seed=seed,
        out_dtype=out_dtype,
    )
    resolved = resolve_recipe(recipe)
    base_src = StateDictSource(base, "base") if base is not None else None
    expert_srcs = [StateDictSource(e, f"expert {i}") for i, e in enumerate(experts)]
    labels = (["base"] if base_src else []) + [f"expert {i}" for i in range(n)]
    plan = build_plan(resolved, base_src, expert_srcs, labels)
    if stats is not None:
        if len(stats) != n:
            raise RecipeError(f"merge_state_dicts: {len(stats)} statistics dicts for {n} experts; give one per expert.")
        plan = attach_stats(plan, [StateDictSource(s, f"statistics of expert {i}") for i, s in enumerate(stats)])
    sink = DictSink()
    execute(plan, sink, device=device)
    return sink.tensors


def _spec_params(method: str):
    from graftkit.methods import METHODS

    return METHODS.get(method).params if method in METHODS else ()


def _is_per_expert_list(value: Any, n: int) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == n and n > 1
