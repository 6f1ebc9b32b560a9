"""Study reports: markdown tables and line figures with error bars.

matplotlib is imported only when a figure is drawn, and figures are drawn on an Agg canvas
without pyplot, so plotting never touches a display or pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graftkit.study.engine._files import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Point = tuple[float, float, "float | None", "float | None"]
"""``(x, y, ylow, yhigh)``; the interval bounds may be None (no error bar)."""

Series = Mapping[str, Sequence[Point]]
"""Series name → its points, drawn as one line."""


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 2 decimals and None shows as "–"."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells for {len(headers)} headers")
    lines = [
        _line(headers),
        "|" + "|".join("---" for _ in headers) + "|",
        *(_line([_format(cell) for cell in row]) for row in rows),
    ]
    return "\n".join(lines) + "\n"


def line_plot(
    series: Series,
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | None = None,
    hline_label: str | None = None,
) -> Path:
    """Draw each series as a line with error bars and write a PNG atomically.

    Args:
        series: name → points ``(x, y, ylow, yhigh)``.
        path: the PNG to write.
        hline: a dashed reference line (e.g. the base model's score), labelled ``hline_label``.
    """
    fig = _figure(1)
    ax = fig.subplots()
    _draw(ax, series, hline, hline_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def panel_plot(
    panels: Mapping[str, Series],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hlines: Mapping[str, float] | None = None,
    hline_label: str | None = None,
) -> Path:
    """One :func:`line_plot`-style panel per entry of ``panels``, side by side with a shared y axis.

    Args:
        panels: panel title (e.g. a base kind or size) → its series.
        hlines: panel title → a dashed reference line in that panel, labelled ``hline_label``.
    """
    if not panels:
        raise ValueError("panel_plot needs at least one panel")
    fig = _figure(len(panels))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (name, series) in zip(axes, panels.items(), strict=True):
        _draw(ax, series, (hlines or {}).get(name), hline_label)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title)
    return _save(fig, path)


def _draw(ax: Axes, series: Series, hline: float | None, hline_label: str | None) -> None:
    for name, points in series.items():
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        # max(0, ·): an interval bound can miss its point by float rounding (e.g. Wilson's at 100 %)
        below = [max(0.0, p[1] - p[2]) if p[2] is not None else 0.0 for p in points]
        above = [max(0.0, p[3] - p[1]) if p[3] is not None else 0.0 for p in points]
        ax.errorbar(xs, ys, yerr=[below, above], marker="o", markersize=4, capsize=3, label=name)
    if hline is not None:
        ax.axhline(hline, linestyle="--", color="grey", linewidth=1, label=hline_label)
    ax.grid(alpha=0.3)
    if series or hline_label:
        ax.legend(fontsize=8)


def _figure(panels: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.5 + 4.5 * panels, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def _format(cell: Any) -> str:
    if cell is None:
        return "–"
    if isinstance(cell, float):
        return f"{cell:.2f}"
    return str(cell)


def _line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
