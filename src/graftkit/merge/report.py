"""Human-readable summaries for `graft validate` and `graft methods`."""

from __future__ import annotations

from pathlib import Path

from graftkit.merge.adapters import adapter_lines
from graftkit.merge.recipe import parse_recipe
from graftkit.merge.run import open_plan
from graftkit.merge.stats_sources import describe
from graftkit.merge.validate import resolve_recipe


def validate_recipe(path: str | Path) -> str:
    """Everything short of reading tensor data; returns a summary or raises a GraftError."""
    recipe = parse_recipe(path)
    resolved = resolve_recipe(recipe)
    with open_plan(resolved, recipe) as plan:
        merged = sum(job.merge for job in plan.jobs)
        lines = [
            f"recipe OK: {resolved.spec.name} of {len(plan.experts)} model(s)"
            + (f" onto base {recipe.base_model}" if recipe.base_model else ""),
            f"  tensors: {len(plan.jobs)} ({merged} merged, {len(plan.jobs) - merged} copied)",
            f"  reads {plan.total_in_bytes / 1e9:.3f} GB, writes {plan.total_out_bytes / 1e9:.3f} GB",
            f"  layers: {plan.n_layers}",
        ]
        lines += plan.summary  # a layer stack's layer plan, an aligned vocabulary
        lines += adapter_lines(plan.experts)
        stats_line = describe(plan)
        lines += [stats_line] if stats_line else []
        lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def methods_table() -> None:
    """Print every registered method with its parameters and paper."""
    from rich.console import Console
    from rich.table import Table

    from graftkit.methods import METHODS

    table = Table(title="graftkit merge methods", show_lines=True)
    for column in ("method", "base", "stats", "parameters (default)", "paper"):
        table.add_column(column)
    for name, spec in METHODS.items():
        params = ["weight (1.0, per expert)"] + [
            f"{p.name} ({p.default}{', per expert' if p.per_expert else ''})" for p in spec.params
        ]
        base = "yes" if spec.needs_base else "no"
        table.add_row(name, base, spec.needs_stats or "", "\n".join(params), f"{spec.summary}\n{spec.paper}")
    Console().print(table)


def check_merged(recipe_path: str | Path, out: Path) -> None:
    """`graft merge --check`: probe the merged model against its parents; exit 2 when flagged."""
    from graftkit.evaluate.sanity import SanityCheckError, check_after_merge, render_check

    recipe = parse_recipe(recipe_path)
    resolved = resolve_recipe(recipe)
    base = Path(recipe.base_model) if recipe.base_model else None
    report = check_after_merge(out, base, [Path(p) for p in resolved.expert_paths])
    render_check(report)
    if not report.ok:
        raise SanityCheckError("The merged model failed its sanity check: " + "; ".join(report.flags))
