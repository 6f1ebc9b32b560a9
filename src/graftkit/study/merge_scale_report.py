"""Tables, figures and the markdown report of the merge-scale study, from :func:`run_study`'s result.

- :func:`tidy_rows`: one row per scored model × task (merged models, and the base, experts and
  multitask baseline as references), with the normalised score and everything that made it.
- :func:`summarise`: one entry per (base, method, n_experts), averaged over the seeds, with a
  95 % t-interval over the seeds; the multitask baseline as ``method: "multitask"``.
- :func:`write_outputs`: ``<name>.json`` (summary + run info), ``<name>_rows.json``/``.csv``,
  ``<name>_held_in.png``, ``<name>_held_out.png`` and ``<name>.md``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from graftkit.evaluate.stats import mean_defined, normalised
from graftkit.study.engine import markdown_table, mean_ci, panel_plot, run_info, write_rows
from graftkit.study.engine._files import write_text_atomic
from graftkit.study.merge_scale import merged_normalised

PAPER = {
    "source": "Yadav et al. 2024, arXiv 2410.03617 (PaLM-2-IT 1B unless said)",
    "held_in_it_1b": {2: 0.91, 8: 0.86},
    "held_out_it_1b": {2: 1.03, 8: 1.05},
    "held_in_1b_8_experts": {"instruct": 0.86, "pretrained": 0.39},
    "held_out_64b_it_8_experts": "1.09-1.10 (multitask 1.05)",
}
"""The paper's numbers this study puts beside its own (../shared/specs/study.md)."""

T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
"""Two-sided 95 % Student t quantiles by degrees of freedom (normal 1.96 beyond)."""


def _ci(values: list[float]) -> tuple[float, float, float]:
    return mean_ci(values, z=T975.get(len(values) - 1, 1.96))


def tidy_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored (model, task) on the test split."""
    rows: list[dict[str, Any]] = []
    for entry in result["bases"]:
        spec, refs = entry["spec"], entry["references"]["test"]
        common = {"base": spec["name"], "base_kind": spec["kind"], "size": spec["size"], "split": "test"}
        for task in [*spec["held_in"], *spec["held_out"]]:
            kind = "held_in" if task in spec["held_in"] else "held_out"
            rows.append({**common, "model": "base", "task": task, "task_kind": kind, "accuracy": refs["base"][task]})
            mt = refs["multitask"][task]
            ref = refs["experts"].get(task) if kind == "held_in" else refs["base"][task]
            rows.append(
                {**common, "model": "multitask", "task": task, "task_kind": kind, "accuracy": mt}
                | {"reference": ref, "normalised": normalised(mt, ref) if ref is not None else None}
            )
        for family, accuracy in refs["experts"].items():
            rows.append(
                {**common, "model": f"expert:{family}", "task": family, "task_kind": "held_in", "accuracy": accuracy}
            )
        for merge in entry["merges"]:
            for task, accuracy in merge["scores"].items():
                kind = "held_in" if task in merge["experts"] else "held_out"
                ref = refs["experts"][task] if kind == "held_in" else refs["base"][task]
                rows.append(
                    {
                        **common,
                        "model": "merged",
                        "method": merge["method"],
                        "n_experts": merge["n_experts"],
                        "seed": merge["seed"],
                        "experts": ",".join(merge["experts"]),
                        "hyperparameters": merge["hyper"],
                        "merge_seed": result["study"]["merge_seed"],
                        "task": task,
                        "task_kind": kind,
                        "accuracy": accuracy,
                        "correct": merge["correct"][task],
                        "n": result["study"]["n_test"],
                        "reference": ref,
                        "normalised": normalised(accuracy, ref),
                    }
                )
    return rows


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (base, method, n_experts): normalised held-in and held-out, mean over seeds and 95 % CI."""
    out = []
    for entry in result["bases"]:
        spec, refs = entry["spec"], entry["references"]
        groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for merge in entry["merges"]:
            groups[(merge["method"], merge["n_experts"])].append(merge)
        for (method, k), merges in groups.items():
            scores = [merged_normalised(m, refs, spec["held_out"]) for m in merges]
            item = {"base": spec["name"], "base_kind": spec["kind"], "size": spec["size"], "method": method}
            item |= {"n_experts": k, "seeds": len(merges), "hyperparameters": merges[0]["hyper"]}
            for field in ("held_in_normalised", "held_out_normalised"):
                values = [s[field] for s in scores if s[field] is not None]
                mean, low, high = _ci(values) if values else (None, None, None)
                item |= {field: mean, f"{field}_ci": [low, high]}
            item["held_in_raw"] = _mean([m["scores"][t] for m in merges for t in m["experts"]])
            item["held_out_raw"] = _mean([m["scores"][t] for m in merges for t in spec["held_out"]])
            out.append(item)
        out.append(_multitask_entry(spec, refs["test"]))
    return out


def _multitask_entry(spec: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    mt = test["multitask"]
    held_in, _ = mean_defined(normalised(mt[t], test["experts"][t]) for t in spec["held_in"])
    held_out, _ = mean_defined(normalised(mt[t], test["base"][t]) for t in spec["held_out"])
    return {
        "base": spec["name"],
        "base_kind": spec["kind"],
        "size": spec["size"],
        "method": "multitask",
        "n_experts": len(spec["held_in"]),
        "held_in_normalised": held_in,
        "held_out_normalised": held_out,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def figures(summary: list[dict[str, Any]], out_dir: Path, name: str) -> list[Path]:
    """Normalised held-in and held-out vs number of experts: one panel per base, a line per method."""
    paths = []
    for field, what in (("held_in_normalised", "held-in"), ("held_out_normalised", "held-out")):
        panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        hlines = {}
        for s in summary:
            title = f"{s['base']} ({s['base_kind']}, {s['size']})"
            if s["method"] == "multitask":
                if s[field] is not None:
                    hlines[title] = s[field]
                continue
            if s[field] is not None:
                low, high = s[f"{field}_ci"]
                panels[title][s["method"]].append((s["n_experts"], s[field], low, high))
        if not panels:
            continue
        path = out_dir / f"{name}_{what.replace('-', '_')}.png"
        paths.append(
            panel_plot(
                {t: dict(series) for t, series in panels.items()},
                path,
                title=f"normalised {what} score vs experts merged (95 % CI over seeds)",
                xlabel="experts merged",
                ylabel=f"normalised {what}",
                hlines=hlines,
                hline_label="multitask",
            )
        )
    return paths


def render(summary: list[dict[str, Any]], result: dict[str, Any]) -> str:
    """The markdown report: our summary table, then the paper's numbers beside ours."""
    headers = ["base", "method", "experts", "held-in norm.", "95 % CI", "held-out norm.", "95 % CI", "hyperparameters"]
    rows = []
    for s in summary:
        ci_in = s.get("held_in_normalised_ci") or [None, None]
        ci_out = s.get("held_out_normalised_ci") or [None, None]
        rows.append(
            [s["base"], s["method"], s["n_experts"], s["held_in_normalised"], _interval(ci_in)]
            + [s["held_out_normalised"], _interval(ci_out), _hyper(s.get("hyperparameters"))]
        )
    study = result["study"]
    lines = [
        f"# Merge-scale study: {study['name']}",
        "",
        f"Methods {', '.join(study['methods'])}; experts merged {study['n_experts']}; seeds {study['seeds']}; "
        f"n = {study['n_test']} test and {study['n_validation']} validation examples per task.",
        *_methods_per_base(study),
        "",
        markdown_table(headers, rows),
        "",
        "## Best method per base and expert count",
        "",
        _best_table(summary),
        "",
        "## Beside the paper",
        "",
        _paper_table(summary),
    ]
    return "\n".join(lines) + "\n"


def _methods_per_base(study: dict[str, Any]) -> list[str]:
    per_base = study.get("methods_per_base") or {}
    if len({tuple(m) for m in per_base.values()}) <= 1:
        return []
    return ["", *(f"- {base}: {', '.join(methods)}" for base, methods in per_base.items())]


def _best_table(summary: list[dict[str, Any]]) -> str:
    """The method with the highest mean normalised held-in score per (base, experts merged)."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for s in summary:
        if s["method"] == "multitask" or s["held_in_normalised"] is None:
            continue
        key = (s["base"], s["n_experts"])
        if key not in best or s["held_in_normalised"] > best[key]["held_in_normalised"]:
            best[key] = s
    rows = [
        [base, k, s["method"], s["held_in_normalised"], _interval(s["held_in_normalised_ci"]), s["held_out_normalised"]]
        for (base, k), s in best.items()
    ]
    headers = ["base", "experts", "best method", "held-in norm.", "95 % CI", "held-out norm."]
    return markdown_table(headers, rows)


def _paper_table(summary: list[dict[str, Any]]) -> str:
    rows = []
    for s in summary:
        if s["method"] == "multitask" or s["n_experts"] not in (2, 8):
            continue
        k = s["n_experts"]
        paper_in = PAPER["held_in_it_1b"][k] if s["base_kind"] == "instruct" else None
        paper_out = PAPER["held_out_it_1b"][k] if s["base_kind"] == "instruct" else None
        if s["base_kind"] == "pretrained" and k == 8:
            paper_in = PAPER["held_in_1b_8_experts"]["pretrained"]
        rows.append([s["base"], s["method"], k, s["held_in_normalised"], paper_in, s["held_out_normalised"], paper_out])
    headers = [
        "base",
        "method",
        "experts",
        "held-in (ours)",
        "held-in (paper, 1B)",
        "held-out (ours)",
        "held-out (paper)",
    ]
    return markdown_table(headers, rows) + f"\n\nPaper: {PAPER['source']}."


def _interval(ci: list[float | None]) -> str:
    return "–" if ci[0] is None else f"{ci[0]:.2f}–{ci[1]:.2f}"


def _hyper(hyper: dict[str, float] | None) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in (hyper or {}).items()) or "–"


def write_outputs(result: dict[str, Any], out_dir: Path, name: str = "merge_scale") -> dict[str, Path]:
    """Write the summary JSON, tidy rows, figures and report into ``out_dir``; returns their paths."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    info = run_info()
    summary = summarise(result)
    paths = {"json": out_dir / f"{name}.json", "rows": out_dir / f"{name}_rows.json", "md": out_dir / f"{name}.md"}
    payload = {"run_info": info, "study": result["study"], "paper": PAPER, "summary": summary}
    payload["references"] = {e["spec"]["name"]: e["references"] for e in result["bases"]}
    write_text_atomic(paths["json"], json.dumps(payload, indent=2) + "\n")
    paths["raw"] = out_dir / f"{name}_raw.json"  # run_study's result: input of combine_results
    write_text_atomic(paths["raw"], json.dumps(result, indent=2) + "\n")
    write_rows(tidy_rows(result), paths["rows"], info)
    for i, path in enumerate(figures(summary, out_dir, name)):
        paths[f"figure{i}"] = path
    write_text_atomic(paths["md"], render(summary, result))
    return paths


GRID_FIELDS = ("n_experts", "seeds", "n_test", "n_validation", "select_on_seed", "merge_seed")
"""Fields every combined run must share; methods may differ per run (a shared method must share its grid)."""


def combine_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs' ``<name>_raw.json`` (e.g. the SmolLM2 and the zoo study files),
    so that one report covers every base without running any unit again.

    Runs may merge different methods (the report says which base ran which); the combined study lists
    every method once, in first-seen order.

    Raises:
        ValueError: the runs differ in expert counts, seeds, n or seed choice, give one method two grids,
            or share a base name.
    """
    if not results:
        raise ValueError("combine_results needs at least one result")
    first = results[0]["study"]
    for other in results[1:]:
        differ = [f for f in GRID_FIELDS if other["study"].get(f) != first.get(f)]
        if differ:
            raise ValueError(f"cannot combine studies whose grids differ in {', '.join(differ)}")
    bases = [b for r in results for b in r["bases"]]
    names = [b["spec"]["name"] for b in bases]
    if len(set(names)) != len(names):
        raise ValueError(f"base names repeat across the results: {names}")
    methods = list(dict.fromkeys(m for r in results for m in r["study"]["methods"]))
    study = {**first, "methods": methods, "grids": _combined_grids(results)}
    study["bases"] = [b for r in results for b in r["study"].get("bases", [])]
    study["methods_per_base"] = {b["spec"]["name"]: list(r["study"]["methods"]) for r in results for b in r["bases"]}
    return {"study": study, "bases": bases}


def _combined_grids(results: list[dict[str, Any]]) -> dict[str, Any]:
    grids: dict[str, Any] = {}
    for result in results:
        for method in result["study"]["methods"]:
            grid = result["study"].get("grids", {}).get(method)
            if method in grids and grids[method] != grid:
                raise ValueError(f"cannot combine studies whose grids differ for method {method!r}")
            grids[method] = grid
    return grids
