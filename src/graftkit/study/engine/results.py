"""Tidy study results: one row per measurement, with the run info that produced them.

A results file is JSON ``{"run_info": ..., "rows": [...]}`` with a CSV of the same rows next to
it, for spreadsheets and pandas.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import random
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from graftkit.study.engine._files import json_default, write_text_atomic

VERSIONED = ("torch", "transformers", "graftkit", "ray")
"""Distributions whose versions go into :func:`run_info` (None when one is not installed)."""


def run_info() -> dict[str, Any]:
    """What produced a result: code revision, library versions and the time.

    Returns:
        ``{"timestamp": ISO-8601 UTC, "git_revision": commit of the working tree holding graftkit
        or None, "git_dirty": whether tracked files differ from it (None without git),
        "versions": {"python": ..., "torch": ..., "transformers": ..., "graftkit": ..., "ray": ...}}``.
        Versions come from package metadata, so nothing is imported.
    """
    revision, dirty = _git_state(Path(__file__).resolve().parent)
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions.update({name: _version(name) for name in VERSIONED})
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_revision": revision,
        "git_dirty": dirty,
        "versions": versions,
    }


def write_rows(rows: Sequence[Mapping[str, Any]], path: Path, info: Mapping[str, Any]) -> None:
    """Write rows as JSON to ``path`` and as CSV to ``path`` with suffix ``.csv``, both atomically.

    The CSV's columns are every key of every row, in the order they first appear; a missing or
    None value is an empty cell, and a list or dict cell holds its JSON.
    """
    path = Path(path)
    write_text_atomic(path, _rows_json(rows, info))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    write_text_atomic(path.with_suffix(".csv"), buffer.getvalue())


def _rows_json(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> str:
    """The rows file's JSON with one compact row per line: a grid's rows stay small enough to commit."""
    lines = [json.dumps(dict(row), separators=(",", ":"), default=json_default) for row in rows]
    head = json.dumps(dict(info), indent=2, default=json_default)
    return '{"run_info": ' + head + ',\n"rows": [\n' + ",\n".join(lines) + "\n]}\n"


def mean_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and normal-approximation confidence interval ``mean ± z · s / √n`` (``s``: sample std).

    Returns:
        ``(mean, low, high)``; for one value, ``low == high == mean``.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * std / math.sqrt(n)
    return mean, mean - half, mean + half


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of the mean (deterministic per ``seed``).

    Returns:
        ``(mean, low, high)``.
    """
    n = len(values)
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_boot))
    tail = (1 - level) / 2
    return sum(values) / n, _quantile(means, tail), _quantile(means, 1 - tail)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _git_state(folder: Path) -> tuple[str | None, bool | None]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return revision, dirty


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)) or hasattr(value, "model_dump"):
        return json.dumps(value, default=json_default)
    return str(value) if isinstance(value, Path) else value
