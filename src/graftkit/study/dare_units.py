"""Study units of the DARE study: an expert's |delta| histogram (the statistics pass is shared:
:func:`graftkit.study.model_units.stats_unit`).

It has the engine's unit signature ``fn(inputs, out_dir, work_dir) -> dict``
(:mod:`graftkit.study.engine.units`), so it is cached by their inputs and run locally or on Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graftkit.study.engine import Unit

MODULE = "graftkit.study.dare_units"


def delta_histogram(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """The |δ| histogram of ``inputs["expert"]`` against ``inputs["base"]``, with DARE's verdict."""
    from graftkit.evaluate.delta_histogram import delta_histogram as histogram
    from graftkit.evaluate.inspect_deltas import DARE_MAX_MEAN_ABS

    result = histogram(inputs["base"]["path"], inputs["expert"]["path"])
    return result | {"dare_applicable": result["mean_abs"] <= DARE_MAX_MEAN_ABS}


def histogram_unit(base: dict[str, str], expert: dict[str, str], label: str) -> Unit:
    return Unit(f"{MODULE}:delta_histogram", {"base": base, "expert": expert}, label)
