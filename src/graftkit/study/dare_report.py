"""Tables, figures and the markdown report of the DARE study, from :func:`.dare.run_study`'s result.

- :func:`sweep_summary`: one entry per (expert, sparsifier, drop_rate, rescale), the scores of the
  mask seeds pooled: ``normalised`` = accuracy ÷ the expert's own accuracy, with a 95 % interval
  (the Wilson interval of the pooled exact-match proportion, divided by the expert's accuracy,
  which is taken as fixed). ``drop_rate = 0`` is the expert itself.
- :func:`prestep_summary`: one entry per (method, with or without DARE): the held-in normalised
  score (the mean over merged tasks of accuracy ÷ expert accuracy) with the mean of the per-task
  interval bounds.
- :func:`write_outputs`: ``<name>.json``, ``<name>_rows.json``/``.csv``, ``<name>_sweep.png``,
  ``<name>_deltas.png`` and ``<name>.md``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from graftkit.evaluate.stats import wilson_interval
from graftkit.study.dare_claims import CLAIM_RULES, claim_rows
from graftkit.study.engine import line_plot, markdown_table, panel_plot, run_info, write_rows
from graftkit.study.engine._files import write_text_atomic

PAPER = {
    "source": "Yu et al. 2023, Language Models are Super Mario, arXiv 2311.03099",
    "sweep": "~0.9 of the expert's score or more kept at p = 0.9 with rescale (0.99 for the largest models)",
    "no_rescale": "collapses at high drop rates",
    "magnitude": "DARE beats magnitude pruning at the same density; rescaling hurts magnitude pruning",
    "prestep": "usually helps decoder models (WizardLM + WizardMath, GSM8K 2.2 -> 66.3)",
    "far": "fails when the expert moved far from the base (continued pre-training; |delta| above about 0.005)",
}


def _ratio_ci(correct: int, n: int, reference: float) -> tuple[float | None, list[float | None]]:
    if reference <= 0:
        return None, [None, None]
    low, high = wilson_interval(correct, n)
    return correct / n / reference, [low / reference, high / reference]


def sweep_summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``sweep`` list of ``dare.json``, the expert itself (``p = 0``) first for each variant."""
    pooled: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for row in result["sweep"]:
        key = (row["expert"], row["sparsifier"], row["drop_rate"], row["rescale"])
        pooled[key][0] += row["correct"]
        pooled[key][1] += row["n"]
    variants = dict.fromkeys((e, s, r) for e, s, _, r in pooled)
    out = []
    for expert, sparsifier, rescale in variants:
        ref = result["experts"][expert]
        points = [(0.0, ref["correct"], ref["n"])]
        points += [(p, c, n) for (e, s, p, r), (c, n) in pooled.items() if (e, s, r) == (expert, sparsifier, rescale)]
        for p, correct, n in sorted(points):
            value, ci = _ratio_ci(correct, n, ref["accuracy"])
            out.append(
                {"expert": expert, "sparsifier": sparsifier, "drop_rate": p, "rescale": rescale}
                | {"normalised": value, "normalised_ci": ci, "accuracy": correct / n, "n": n}
            )
    return out


def prestep_summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (method, dare): held-in normalised and each task's accuracy."""
    out = []
    for row in result["prestep"]:
        values, lows, highs = [], [], []
        for task, correct in row["correct"].items():
            value, (low, high) = _ratio_ci(correct, row["n"], result["experts"][task]["accuracy"])
            if value is not None:
                values.append(value)
                lows.append(low)
                highs.append(high)
        out.append(
            {"method": row["method"], "dare": row["dare"], "drop_rate": row["drop_rate"]}
            | {"held_in_normalised": _mean(values), "held_in_normalised_ci": [_mean(lows), _mean(highs)]}
            | {"scores": row["scores"]}
        )
    return out


def diagnostics(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per expert: mean |δ|, the shares above 0.002 and 0.005, and the DARE verdict."""
    return [
        {"expert": label, "far": result["experts"][label]["far"], "mean_abs": h["mean_abs"]}
        | {
            "above_0.002": h["above"]["0.002"],
            "above_0.005": h["above"]["0.005"],
            "dare_applicable": h["dare_applicable"],
        }
        for label, h in result["histograms"].items()
    ]


def figures(result: dict[str, Any], sweep: list[dict[str, Any]], out_dir: Path, name: str) -> list[Path]:
    """Normalised score vs drop rate (a panel per expert, a line per variant) and the |δ| histograms."""
    panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for s in sweep:
        if s["normalised"] is not None:
            variant = f"{s['sparsifier']} {'rescaled' if s['rescale'] else 'no rescale'}"
            panels[s["expert"]][variant].append((s["drop_rate"], s["normalised"], *s["normalised_ci"]))
    paths = []
    if panels:
        paths.append(
            panel_plot(
                {e: dict(series) for e, series in panels.items()},
                out_dir / f"{name}_sweep.png",
                title="normalised score on the expert's own task vs drop rate (95 % Wilson interval)",
                xlabel="drop rate p",
                ylabel="score / expert's score",
            )
        )
    series = {}
    for label, h in result["histograms"].items():
        total = max(1, h["numel"])
        centres = _bin_centres(h["edges"])
        verdict = "DARE applicable" if h["dare_applicable"] else "moved far"
        key = f"{label} (mean {h['mean_abs']:.2g}, {verdict})"
        series[key] = [
            (math.log10(c), count / total, None, None) for c, count in zip(centres, h["counts"], strict=True)
        ]
    paths.append(
        line_plot(
            series,
            out_dir / f"{name}_deltas.png",
            title="distribution of |delta| per expert",
            xlabel="log10 |delta| (half-decade bins)",
            ylabel="share of entries",
            hline=None,
        )
    )
    return paths


def render(result: dict[str, Any], sweep, prestep, diag) -> str:
    """The markdown report: the sweep, DARE vs magnitude, the pre-step table, the diagnostic, the paper."""
    study = result["study"]
    base = study["base"]["name"]
    rows = [
        [
            s["expert"],
            s["sparsifier"],
            "yes" if s["rescale"] else "no",
            s["drop_rate"],
            s["normalised"],
            _interval(s["normalised_ci"]),
        ]
        for s in sweep
    ]
    pre = [
        [
            p["method"],
            "yes" if p["dare"] else "no",
            p["drop_rate"],
            p["held_in_normalised"],
            _interval(p["held_in_normalised_ci"]),
            ", ".join(f"{t} {a:.2f}" for t, a in p["scores"].items()),
        ]
        for p in prestep
    ]
    dia = [
        [
            d["expert"],
            f"{d['mean_abs']:.2e}",
            d["above_0.002"],
            d["above_0.005"],
            "yes" if d["dare_applicable"] else "no",
        ]
        for d in diag
    ]
    experts = [[label, e["family"], e["accuracy"], e["n"]] for label, e in result["experts"].items()]
    lines = [
        f"# DARE study: {study['name']} on {base}",
        "",
        f"n = {study['n_test']} test examples per task; DARE mask seeds {study['sweep']['mask_seeds']} (pooled).",
        "",
        "## Experts",
        "",
        markdown_table(["expert", "task", "accuracy", "n"], experts),
        "## Drop-rate sweep (normalised by the expert's own score)",
        "",
        markdown_table(["expert", "sparsifier", "rescale", "drop rate", "normalised", "95 % CI"], rows),
        "## DARE as a pre-step",
        "",
        f"Experts {', '.join(study['prestep']['experts'])}; drop rate {study['prestep']['drop_rate']} with rescale.",
        "",
        markdown_table(["method", "DARE first", "drop rate", "held-in norm.", "95 % CI", "accuracy per task"], pre),
        "## Applicability diagnostic",
        "",
        markdown_table(["expert", "mean abs delta", "share > 0.002", "share > 0.005", "DARE applicable"], dia),
        "## The paper's claims beside ours",
        "",
        markdown_table(
            ["claim", "paper", "ours", "verdict"],
            [
                [c["claim"], c["paper"], c["ours"], c["verdict"]]
                for c in claim_rows(sweep, prestep, result["experts"], PAPER)
            ],
        ),
        "",
        f"Verdict rules: {CLAIM_RULES}",
        "",
        f"Paper: {PAPER['source']}.",
    ]
    return "\n".join(lines) + "\n"


def tidy_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored model × task (sweep points per mask seed, then the pre-step merges)."""
    base = result["study"]["base"]["name"]
    rows = [{"base": base, "part": "sweep", **r} for r in result["sweep"]]
    for p in result["prestep"]:
        for task, accuracy in p["scores"].items():
            rows.append(
                {
                    "base": base,
                    "part": "prestep",
                    "method": p["method"],
                    "dare": p["dare"],
                    "drop_rate": p["drop_rate"],
                    "task": task,
                    "accuracy": accuracy,
                    "correct": p["correct"][task],
                    "n": p["n"],
                }
            )
    return rows


def _bin_centres(edges: list[float]) -> list[float]:
    """Geometric centres of the underflow bin, each ``[edges[i], edges[i+1])`` and the overflow bin."""
    inner = [math.sqrt(a * b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return [edges[0] / 10**0.25, *inner, edges[-1] * 10**0.25]


def _base(result: dict[str, Any]) -> dict[str, float]:
    return (result.get("base_scores") or {}).get("scores", {})


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _interval(ci: list[float | None]) -> str:
    return "–" if ci[0] is None else f"{ci[0]:.2f}–{ci[1]:.2f}"


def write_outputs(result: dict[str, Any], out_dir: Path, name: str = "dare") -> dict[str, Path]:
    """Write the JSON, tidy rows, figures and report into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = run_info()
    sweep, prestep, diag = sweep_summary(result), prestep_summary(result), diagnostics(result)
    paths = {"json": out_dir / f"{name}.json", "rows": out_dir / f"{name}_rows.json", "md": out_dir / f"{name}.md"}
    payload = {"run_info": info, "study": result["study"], "paper": PAPER, "experts": result["experts"]}
    payload |= {"sweep": sweep, "prestep": prestep, "diagnostic": diag, "base_scores": result["base_scores"]}
    payload["claims"] = claim_rows(sweep, prestep, result["experts"], PAPER, _base(result))
    write_text_atomic(paths["json"], json.dumps(payload, indent=2) + "\n")
    write_rows(tidy_rows(result), paths["rows"], info)
    for i, path in enumerate(figures(result, sweep, out_dir, name)):
        paths[f"figure{i}"] = path
    write_text_atomic(paths["md"], render(result, sweep, prestep, diag))
    return paths
