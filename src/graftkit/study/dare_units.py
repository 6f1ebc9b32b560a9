"""Study units of the DARE study: an expert's statistics pass and its |delta| histogram.

Both have the engine's unit signature ``fn(inputs, out_dir, work_dir) -> dict``
(:mod:`graftkit.study.engine.units`), so they are cached by their inputs and run locally or on Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graftkit.study.engine import Unit

MODULE = "graftkit.study.dare_units"
STATS_DIR = "stats"


def expert_stats(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Fisher and RegMean statistics of ``inputs["model"]`` on ``inputs["task"]`` (``n`` train examples),
    written into ``out_dir/stats`` (:func:`graftkit.stats.run.compute_stats`)."""
    import torch

    from graftkit.stats.run import compute_stats

    torch.set_num_threads(int(inputs.get("threads", 2)))
    compute_stats(inputs["model"]["path"], out_dir / STATS_DIR, task=inputs["task"], n=int(inputs["n"]))
    return {"stats": STATS_DIR}


def stats_unit(model: dict[str, str], task: str, n: int, label: str) -> Unit:
    return Unit(f"{MODULE}:expert_stats", {"model": model, "task": task, "n": n}, label)


def delta_histogram(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """The |δ| histogram of ``inputs["expert"]`` against ``inputs["base"]``, with DARE's verdict."""
    from graftkit.evaluate.delta_histogram import delta_histogram as histogram
    from graftkit.evaluate.inspect_deltas import DARE_MAX_MEAN_ABS

    result = histogram(inputs["base"]["path"], inputs["expert"]["path"])
    return result | {"dare_applicable": result["mean_abs"] <= DARE_MAX_MEAN_ABS}


def histogram_unit(base: dict[str, str], expert: dict[str, str], label: str) -> Unit:
    return Unit(f"{MODULE}:delta_histogram", {"base": base, "expert": expert}, label)
