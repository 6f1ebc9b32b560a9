"""``graft merge --format gguf``: stream a merge into one llama.cpp GGUF file instead of a folder.

The file carries the hyperparameters (from the reference model's config), the tokenizer (from the
tokenizer source: an HF folder's byte-level BPE, or a GGUF input's metadata copied as is) and the
resolved recipe (metadata key ``graftkit.recipe``), since there is no folder to put it beside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from graftkit.errors import GraftError
from graftkit.merge.plan import MergePlan

FORMATS = ("safetensors", "gguf")


def check_format(out: Path, options: Any) -> None:
    """Refuse option combinations GGUF output does not support, before any file is opened.

    Raises:
        GraftError: ``--gguf-type`` without ``--format gguf``, ``--resume`` with it, or an output
            path that does not end in ``.gguf``.
    """
    if options.format != "gguf":
        if options.gguf_type is not None:
            raise GraftError(
                f"--gguf-type {options.gguf_type} applies to GGUF output only; add --format gguf "
                "(format='gguf'), or drop --gguf-type to write safetensors."
            )
        return
    if options.resume:
        raise GraftError(
            "--resume is not supported with --format gguf (a GGUF file is written front to back and an "
            "interrupted one is discarded); run the merge again without --resume."
        )
    if out.suffix != ".gguf":
        raise GraftError(f"--format gguf writes one file; give -o a file name ending in .gguf, not {str(out)!r}.")


def check_gguf_plan(plan: MergePlan, out: Path) -> None:
    """Refuse a plan GGUF cannot hold (not Llama, scaled RoPE, unmapped tensors) before any merging."""
    from graftkit.io.gguf_llama import check_config, gguf_name

    check_config(plan.output_config, plan.labels[0])
    if plan.vocab is not None and plan.vocab.tokenizer is not None:
        raise GraftError(
            f"{out}: a union tokenizer with added tokens cannot be written into a GGUF file yet; write "
            "safetensors instead (drop --format gguf), or use `tokenizer: {source: base}`."
        )
    unmapped = [job.name for job in plan.jobs if gguf_name(job.name) is None]
    if unmapped:
        raise GraftError(
            f"{out}: tensors {', '.join(repr(n) for n in unmapped[:8])} have no name in llama.cpp's Llama layout, "
            "so the merge cannot be written to GGUF. Write safetensors instead (drop --format gguf)."
        )


def write_gguf_merge(plan: MergePlan, file: Path, name: str, options: Any) -> None:
    """Stream every tensor of ``plan`` into the GGUF file ``file`` (a temporary path).

    Args:
        plan: the checked plan.
        file: where to write.
        name: the model's name (``general.name``), usually the output file's stem.
        options: the merge's :class:`graftkit.merge.run.MergeOptions`.
    """
    import gguf

    from graftkit.io.gguf_writer import GGUFFileWriter
    from graftkit.merge.executor import execute
    from graftkit.merge.progress import merge_progress

    recipe = plan.resolved.recipe
    recipe_yaml = yaml.safe_dump(recipe.dump(), sort_keys=False)
    t = gguf.GGUFValueType
    metadata = [
        ("general.name", name, t.STRING, None),
        ("graftkit.recipe", recipe_yaml, t.STRING, None),
        *tokenizer_metadata(plan),
    ]
    entries = [(job.name, job.shape, job.out_dtype) for job in plan.jobs]
    with (
        GGUFFileWriter(file, entries, plan.output_config, options.gguf_type or "f16", metadata) as writer,
        merge_progress(plan, enabled=options.progress) as advance,
    ):
        execute(plan, writer, device=options.device, on_tensor=advance)


def tokenizer_metadata(plan: MergePlan) -> list:
    """The tokenizer entries for the merged file, from ``tokenizer_source`` or the reference model."""
    from graftkit.io.gguf_tokenizer import tokenizer_from_folder, tokenizer_from_gguf

    recipe = plan.resolved.recipe
    source = plan.vocab.copy_from if plan.vocab is not None else None  # `tokenizer: {source: MODEL}`
    where = Path(source or recipe.base_model or recipe.models[0].model)
    if where.is_file() and where.suffix == ".gguf":
        return tokenizer_from_gguf(where)
    if not where.is_dir():
        raise GraftError(f"`tokenizer_source` {str(where)!r} is not a model folder or .gguf file; use `base` or a path")
    return tokenizer_from_folder(where, int(plan.output_config.get("vocab_size", 0)))
