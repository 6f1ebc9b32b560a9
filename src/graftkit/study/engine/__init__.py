"""The shared study engine: cached, resumable units, backends that run them, grids, tidy results, reports.

A study is a list of :class:`Unit` (a function's import path and its inputs) run by a backend
(:class:`LocalBackend` in this process, :class:`RayBackend` on Ray) into a :class:`UnitStore`,
which skips finished units and resumes killed ones. Results become rows
(:func:`write_rows`, with :func:`run_info`) and then tables and figures (:mod:`.report`).
"""

from __future__ import annotations

from graftkit.study.engine.backends import BACKENDS, Backend, LocalBackend, RayBackend, get_backend
from graftkit.study.engine.grid import expand, pick_subsets
from graftkit.study.engine.report import line_plot, markdown_table, panel_plot
from graftkit.study.engine.results import bootstrap_ci, mean_ci, run_info, write_rows
from graftkit.study.engine.units import Unit, UnitStore, resolve

__all__ = [
    "BACKENDS",
    "Backend",
    "LocalBackend",
    "RayBackend",
    "Unit",
    "UnitStore",
    "bootstrap_ci",
    "expand",
    "get_backend",
    "line_plot",
    "markdown_table",
    "mean_ci",
    "panel_plot",
    "pick_subsets",
    "resolve",
    "run_info",
    "write_rows",
]
