"""``graft stats``: measure an expert's statistics on its task and write them as a folder.

The folder (see :mod:`graftkit.io.stats_folder`) holds ``fisher.safetensors`` and/or
``regmean.safetensors``, keyed by the expert's state-dict names, and ``stats.json`` recording
what was measured, on which data, how, and with which versions.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from graftkit.errors import GraftError, OutputExistsError
from graftkit.stats.collect import KINDS, Measured, collect
from graftkit.stats.data import encoded, stat_examples

log = logging.getLogger("graftkit")

DEFAULT_N = 256
MAX_SEQ_LEN = 512
DEFINITIONS = {
    "fisher": "diagonal empirical Fisher: mean over examples of the squared gradient of log p(answer + eos | prompt) "
    "(gold labels, summed over the answer tokens), one example per backward pass",
    "regmean": "Gram matrix X^T X of each nn.Linear's inputs, summed over every token of every example "
    "(accumulated in float64, stored in float32), keyed by the linear layer's weight name",
}


def parse_kinds(kind: str) -> tuple[str, ...]:
    """``fisher``, ``regmean`` or ``both`` as a tuple of kinds."""
    if kind == "both":
        return KINDS
    if kind not in KINDS:
        raise GraftError(f"--kind must be fisher, regmean or both, got {kind!r}.")
    return (kind,)


def compute_stats(
    expert: str | Path,
    out: str | Path,
    *,
    task: str | None = None,
    jsonl: str | Path | None = None,
    kinds: Sequence[str] = KINDS,
    n: int = DEFAULT_N,
    device: str = "cpu",
    overwrite: bool = False,
    tokenizer: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Stream ``n`` examples through ``expert`` and write its statistics folder ``out``.

    Args:
        expert: a ``save_pretrained`` causal-LM folder (with a tokenizer, or give ``tokenizer``).
        out: the statistics folder to create (atomically: built beside it, then renamed).
        task: a registered task (its train split), or
        jsonl: a JSON-lines file of ``{"prompt", "completion"}`` rows.
        kinds: ``fisher`` and/or ``regmean``.
        n: examples to stream.
        device: ``cpu`` or ``cuda[:N]`` (refused when this machine has no such device).
        overwrite: replace an existing ``out``.
        tokenizer: a folder to load the tokenizer from, when ``expert`` has none.
        echo: where to report progress (one line per 64 examples); None for silence.

    Returns:
        ``out``.

    Raises:
        GraftError: bad data source or kinds, ``out`` exists, an unusable device or model.
    """
    from graftkit.evaluate.runner import load_model
    from graftkit.io import Checkpoint, write_stats_folder
    from graftkit.merge.preflight import check_output_path
    from graftkit.merge.run import check_device

    kinds = tuple(kinds)
    if not kinds or set(kinds) - set(KINDS):
        raise GraftError(f"Statistics kinds must be among {', '.join(KINDS)}, got {list(kinds)}.")
    out, expert = Path(out), Path(expert)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputExistsError(f"Statistics folder {str(out)!r} already exists; pass --overwrite to replace it.")
    check_output_path(out, [expert])
    dev = check_device(device)
    examples, data = stat_examples(task, jsonl, n)
    with Checkpoint.open(expert) as checkpoint:
        stored = set(checkpoint.tensors)
    model, tok = load_model(expert, device=dev, tokenizer=tokenizer)
    seq_len = min(MAX_SEQ_LEN, int(getattr(model.config, "max_position_embeddings", MAX_SEQ_LEN) or MAX_SEQ_LEN))
    measured = collect(model, _reporting(encoded(examples, tok, seq_len, dev), len(examples), echo), kinds)
    tensors = _stored_names(measured, model, stored)
    info = {
        "model": str(expert),
        "data": data,
        "examples": measured.examples,
        "tokens": measured.tokens,
        "answer_tokens": measured.answer_tokens,
        "seq_len": seq_len,
        "device": str(dev),
        "dtype": "float32",
        **{kind: {"definition": DEFINITIONS[kind], "tensors": len(tensors[kind])} for kind in kinds},
        "versions": _versions(),
    }
    if "fisher" in kinds:
        info["fisher"].update(label="gold", batch_size=1)
    if "regmean" in kinds and not any(name != "lm_head.weight" for name in tensors["regmean"]):
        log.warning("%s has no nn.Linear layers besides its head: regmean will average every other tensor", expert)
    return write_stats_folder(out, tensors, info, overwrite=overwrite)


def _reporting(batches, total: int, echo: Callable[[str], None] | None):
    for i, batch in enumerate(batches, start=1):
        yield batch
        if echo is not None and (i % 64 == 0 or i == total):
            echo(f"statistics: {i}/{total} examples")


def _stored_names(measured: Measured, model: torch.nn.Module, stored: set[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Key each statistic by the name the checkpoint stores its tensor under.

    A parameter shared by several modules (a tied head) has several names; its Fisher goes
    under the one the checkpoint stores. Grams keep their linear layer's weight name, so a tied
    head's Gram stays ``lm_head.weight`` (used when a merge's output has an untied head).
    """
    aliases: dict[int, list[str]] = {}
    first: dict[str, int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
        first[name] = id(p)
    out = dict(measured.tensors)
    if "fisher" in out:
        renamed = {}
        for name, f in out["fisher"].items():
            names = [a for a in aliases[first[name]] if a in stored]
            if names:
                renamed[names[0]] = f
        out["fisher"] = renamed
    return out


def _versions() -> dict[str, str]:
    import transformers

    import graftkit

    return {
        "graftkit": graftkit.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
