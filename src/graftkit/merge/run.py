"""Merge checkpoints on disk: open headers, plan, stream into a temporary folder, rename."""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from graftkit.errors import CheckpointError, GraftError, OutputExistsError
from graftkit.io.gguf_writer import GGUF_TYPES
from graftkit.merge.gguf_output import FORMATS, check_format, check_gguf_plan, write_gguf_merge
from graftkit.merge.plan import MergePlan, build_plan
from graftkit.merge.preflight import check_output_path
from graftkit.merge.recipe import Recipe
from graftkit.merge.stats_sources import attach_stats, computed_stats, given_folders, open_stats
from graftkit.merge.validate import resolve_recipe

log = logging.getLogger("graftkit")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(value: int | str) -> int:
    """Bytes from ``5GB``, ``500MB``, ``2GiB`` or a plain integer."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise GraftError(f"Cannot read size {value!r}; write it like 5GB, 500MB or 1000000.")
    unit = (match.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0]) if unit and unit[0] != "B" else 0
    return int(float(match.group(1)) * base**power)


class MergeOptions(BaseModel):
    """How to run a merge (not what to merge: that is the recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str = "cpu"
    seed: int | None = None
    overwrite: bool = False
    threads: int | None = None
    max_shard_size: int = 5 * 10**9
    progress: bool = True
    resume: bool = False
    durable: bool = False
    format: str = "safetensors"
    """``safetensors`` (an HF folder) or ``gguf`` (one llama.cpp file, see :mod:`graftkit.merge.gguf_output`)."""
    gguf_type: str | None = None
    """With ``format="gguf"``: ``f16`` (default), ``bf16`` or ``q8_0`` for the weight matrices."""

    @field_validator("max_shard_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value)

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in FORMATS:
            raise GraftError(f"Unknown output format {value!r}; use one of {', '.join(FORMATS)}.")
        return value

    @field_validator("gguf_type")
    @classmethod
    def _gguf_type(cls, value: str | None) -> str | None:
        if value is not None and value not in GGUF_TYPES:
            raise GraftError(f"Unknown --gguf-type {value!r}; use one of {', '.join(GGUF_TYPES)}.")
        return value


def check_device(device: str) -> torch.device:
    """``device`` as a ``torch.device``, refused before any work when this machine lacks it."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise GraftError(f"Unknown device {device!r}; use cpu, cuda or cuda:N.") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise GraftError(
                f"--device {device} was asked for, but torch {torch.__version__} sees no CUDA device here; "
                "use --device cpu (the default) or install a CUDA build of torch."
            )
        if parsed.index is not None and parsed.index >= count:
            raise GraftError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}.")
    elif parsed.type != "cpu":
        raise GraftError(f"Device {device!r} is not supported for merging; use cpu or cuda.")
    return parsed


def run_merge(recipe: Recipe, out: Path, options: MergeOptions) -> Path:
    """Validate, plan and execute ``recipe`` into ``out``. See :func:`graftkit.merge`."""
    from graftkit.io import atomic_file, atomic_output

    check_format(out, options)
    gguf = options.format == "gguf"
    check_device(options.device)
    if options.seed is not None:
        recipe = recipe.model_copy(update={"seed": options.seed})
    resolved = resolve_recipe(recipe)
    check_output_path(out, ([recipe.base_model] if recipe.base_model else []) + resolved.expert_paths)
    if out.exists() and not options.overwrite:
        raise OutputExistsError(f"Output {str(out)!r} already exists; pass --overwrite to replace it.")
    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        with open_plan(resolved, recipe) as checked:
            for warning in checked.warnings:
                log.warning(warning)
            if gguf:
                check_gguf_plan(checked, out)
            check_disk_space(checked, out)
            target = (
                atomic_file(out, overwrite=options.overwrite, durable=options.durable)
                if gguf
                else atomic_output(
                    out, overwrite=options.overwrite, resumable=True, resume=options.resume, durable=options.durable
                )
            )
            with (
                computed_stats(checked, out, options.device) as plan,  # a statistics pass, if the recipe asks
                target as tmp,
            ):
                try:
                    if gguf:
                        write_gguf_merge(plan, tmp, out.stem, options)
                    else:
                        write_merge(plan, tmp, options)
                except OSError as err:
                    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    raise GraftError(
                        f"The disk under {out.parent} filled up while writing the merged model "
                        f"({plan.total_out_bytes / 1e9:.2f} GB needed); the partial output was removed and "
                        f"nothing was written to {out}. Free space and run the merge again."
                    ) from None
    finally:
        torch.set_num_threads(threads)
    return out


FINGERPRINT_FILE = ".graft-plan.json"


def fingerprint(plan: MergePlan) -> str:
    """What must not change between an interrupted merge and its resumption."""
    import hashlib
    import json

    recipe = plan.resolved.recipe.model_dump(mode="json")
    jobs = [(j.name, list(j.shape), str(j.out_dtype), list(j.experts)) for j in plan.jobs]
    return hashlib.sha256(json.dumps([recipe, jobs], sort_keys=True).encode()).hexdigest()


def _resumable(folder: Path, plan: MergePlan, resume: bool) -> bool:
    """Whether ``folder`` holds an interrupted run of this very plan; records the plan either way."""
    marker = folder / FINGERPRINT_FILE
    same = resume and marker.is_file() and marker.read_text() == fingerprint(plan)
    if resume and marker.is_file() and not same:
        log.warning("the interrupted merge in %s used another recipe; starting over", folder)
    marker.write_text(fingerprint(plan))
    return same


@contextmanager
def open_plan(resolved, recipe: Recipe) -> Iterator[MergePlan]:
    """Open every checkpoint's headers and build the plan; close the files afterwards.

    For a method with ``needs_stats``, the statistics folders the recipe names are opened and
    checked too; statistics the recipe asks to compute are left out (see
    :func:`graftkit.merge.stats_sources.computed_stats`).
    """
    from graftkit.merge.adapters import open_base, open_expert

    opened: list = []
    try:
        base = open_base(recipe.base_model) if recipe.base_model else None
        if base is not None:
            opened.append(base)
        experts = []
        for i, entry in enumerate(resolved.recipe.models):  # a LoRA adapter opens as base + ΔW
            experts.append(open_expert(entry, i, base))
            opened.append(experts[-1])
        for checkpoint in opened:
            refuse_quantized(checkpoint)
        labels = ([recipe.base_model] if base else []) + resolved.expert_paths
        plan = build_plan(resolved, base, experts, labels)
        if resolved.spec.needs_stats is not None:
            stats = open_stats(resolved, given_folders(resolved))
            opened += [s for s in stats if s is not None]
            plan = attach_stats(plan, stats)
        yield plan
    finally:
        for checkpoint in opened:
            checkpoint.close()


def refuse_quantized(checkpoint: Any) -> None:
    from graftkit.io import detect_quantization

    kind = detect_quantization(checkpoint.config, checkpoint.tensors)
    if kind:
        raise CheckpointError(
            f"{checkpoint.path} is a {kind} quantized checkpoint, which graftkit does not merge: "
            "merge the full-precision checkpoints, then quantize the result."
        )


def check_disk_space(plan: MergePlan, out: Path) -> None:
    from graftkit.io import free_disk_bytes

    need = plan.total_out_bytes
    free = free_disk_bytes(out)
    if need > free:
        raise GraftError(
            f"The merged model needs about {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free "
            f"under {out.parent}; free space or choose another output folder."
        )


def write_merge(plan: MergePlan, folder: Path, options: MergeOptions) -> None:
    """Stream every tensor into sharded safetensors in ``folder``, then the small files."""
    from graftkit.io import ShardedWriter
    from graftkit.merge.executor import execute
    from graftkit.merge.progress import merge_progress

    entries = [(job.name, job.shape, job.out_dtype) for job in plan.jobs]
    resume = _resumable(folder, plan, options.resume)
    with (
        ShardedWriter(
            folder, entries, options.max_shard_size, journal=True, resume=resume, durable=options.durable
        ) as writer,
        merge_progress(plan, enabled=options.progress) as advance,
    ):
        if writer.written:
            log.info("resuming: %d of %d tensors already written and verified", len(writer.written), len(plan.jobs))
        execute(plan, writer, device=options.device, on_tensor=advance, skip=set(writer.written))
    (folder / FINGERPRINT_FILE).unlink()
    write_side_files(plan, folder)


def write_side_files(plan: MergePlan, folder: Path) -> None:
    """config.json (with the output dtype), tokenizer and other small files, recipe, model card."""
    from graftkit.io import copy_side_files, write_config, write_model_card

    recipe = plan.resolved.recipe
    reference = Path(recipe.base_model or recipe.models[0].model)
    if reference.is_file() and reference.suffix == ".gguf":
        from graftkit.io.gguf_tokenizer import save_gguf_tokenizer

        save_gguf_tokenizer(reference, folder)  # a GGUF file has no side files; its tokenizer is metadata
    else:
        copy_side_files(reference, folder)
    if plan.vocab is not None:  # an aligned vocabulary: the union's or a named model's tokenizer
        plan.vocab.write_tokenizer(folder)
    config = plan.output_config
    if config:
        dtype = plan.out_dtype or _reference_float_dtype(plan)
        write_config(folder, config, dtype)
    recipe_yaml = yaml.safe_dump(recipe.dump(), sort_keys=False)
    (folder / "graft_recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
    write_model_card(folder, plan.resolved.spec.name, plan.labels, recipe_yaml)


def _reference_float_dtype(plan: MergePlan) -> torch.dtype:
    for job in plan.jobs:
        if job.merge:
            return job.out_dtype
    return torch.float32
