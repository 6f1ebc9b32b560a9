"""Folders of per-tensor statistics: one safetensors file per kind, and a JSON of what was measured.

::

    DIR/stats.json              {"format": "graftkit-stats", "version": 1, "kinds": [...], ...}
    DIR/<kind>.safetensors      statistic tensors keyed by the weight tensor's state-dict name

This layer knows the layout, not what a kind means: kinds are names chosen by the statistics
pass (``fisher``, ``regmean``) and read back by whatever asks for them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import CheckpointError
from graftkit.io.output import atomic_output

STATS_JSON = "stats.json"
STATS_FORMAT = "graftkit-stats"
STATS_VERSION = 1


def stats_file(folder: str | os.PathLike[str], kind: str) -> Path:
    """Where a folder keeps the statistics of one kind."""
    return Path(folder) / f"{kind}.safetensors"


def write_stats_folder(
    out: str | os.PathLike[str],
    tensors: Mapping[str, Mapping[str, torch.Tensor]],
    info: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``kind → {name: tensor}`` and ``info`` as a statistics folder, atomically.

    The folder is built beside ``out`` and renamed into place when complete (see
    :func:`graftkit.io.atomic_output`), so a folder that exists is whole.

    Args:
        out: the folder to create.
        tensors: per kind, the statistic tensors (any device; stored contiguous on the CPU).
        info: JSON-able record of what was measured; ``format``, ``version`` and ``kinds`` are added.
        overwrite: replace an existing ``out``.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    record = {"format": STATS_FORMAT, "version": STATS_VERSION, "kinds": sorted(tensors), **info}
    with atomic_output(out, overwrite=overwrite) as tmp:
        for kind, named in tensors.items():
            state = {name: t.detach().to("cpu").contiguous() for name, t in named.items()}
            save_file(state, str(stats_file(tmp, kind)), metadata={"format": "pt", "kind": kind})
        (tmp / STATS_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Path(out)


def read_stats_info(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``stats.json`` of a statistics folder, checked to be one.

    Raises:
        CheckpointError: the folder or its JSON is missing, or the JSON is not a statistics record.
    """
    folder = Path(folder)
    path = folder / STATS_JSON
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such statistics folder (write one with `graft stats`).")
    if not path.is_file():
        raise CheckpointError(
            f"{folder}: is not a statistics folder (no {STATS_JSON}); write one with `graft stats MODEL -o {folder}`."
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: is not valid JSON ({e}); compute the statistics again.") from e
    if not isinstance(info, dict) or info.get("format") != STATS_FORMAT or not isinstance(info.get("kinds"), list):
        raise CheckpointError(f"{path}: is not a graftkit statistics record; compute the statistics again.")
    if info.get("version") != STATS_VERSION:
        raise CheckpointError(
            f"{path}: statistics format version {info.get('version')!r}, but this graftkit reads version "
            f"{STATS_VERSION}; compute the statistics again."
        )
    return info
