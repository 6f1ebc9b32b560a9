"""The DARE paper's claims beside this study's numbers, each with a verdict by a stated rule.

Yu et al. 2023 ("Language Models are Super Mario", arXiv 2311.03099) make five claims; each row of
:func:`claim_rows` quotes the paper, gives our numbers for it and a verdict:

- ``sweep``: DARE with rescale keeps ≥ 0.85 of every (near) expert's score at p = 0.9.
- ``no_rescale``: without the rescale every expert keeps at least 0.2 less than with it at p = 0.9.
- ``magnitude``: DARE with rescale beats both magnitude-pruning variants at p = 0.9 for every expert.
- ``prestep``: DARE first raises a merge's normalised held-in by more than 0.05 (counted per method;
  the verdict says how many methods it helped, hurt or left within ±0.05).
- ``far``: the far-moved expert keeps at least 0.2 less than its near sibling at p = 0.9.

A verdict is ``holds``, ``does not hold``, ``mixed`` (some experts or methods each way) or ``no data``.
"""

from __future__ import annotations

from typing import Any

DROP = 0.9
KEEP = 0.85
GAP = 0.2
PRESTEP_EFFECT = 0.05
CLAIM_RULES = (
    f"sweep holds if DARE with rescale keeps ≥ {KEEP} at p = {DROP} for every near expert; no_rescale if "
    f"dropping the rescale costs ≥ {GAP} there; magnitude if DARE beats both magnitude variants there; "
    f"prestep counts methods moved by more than {PRESTEP_EFFECT}; far if the far expert keeps ≥ {GAP} less "
    "than its near sibling at p = 0.9 (a far expert that does not beat the base on its task gives no data)."
)


def claim_rows(
    sweep: list[dict[str, Any]],
    prestep: list[dict[str, Any]],
    experts: dict[str, dict[str, Any]],
    paper: dict,
    base_scores: dict[str, float] | None = None,
) -> list[dict[str, str]]:
    """One row per claim: ``{claim, paper, ours, verdict}`` (``sweep``/``prestep`` as in ``dare.json``;
    ``base_scores``: the base's accuracy per task, to refuse a far expert that does not beat the base)."""
    at = {(s["expert"], s["sparsifier"], s["rescale"], s["drop_rate"]): s["normalised"] for s in sweep}
    near = [label for label, e in experts.items() if not e.get("far") and (label, "dare", True, DROP) in at]
    far = [label for label, e in experts.items() if e.get("far") and (label, "dare", True, DROP) in at]
    rows = [
        _sweep(at, near),
        _no_rescale(at, near),
        _magnitude(at, near),
        _prestep(prestep),
        _far(at, far, experts, base_scores or {}),
    ]
    return [{"claim": claim, "paper": paper.get(claim, ""), "ours": ours, "verdict": v} for claim, ours, v in rows]


def _verdict(checks: list[bool]) -> str:
    if not checks:
        return "no data"
    if all(checks):
        return "holds"
    return "does not hold" if not any(checks) else "mixed"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _sweep(at, near) -> tuple[str, str, str]:
    parts, checks = [], []
    for e in near:
        kept = at[(e, "dare", True, DROP)]
        parts.append(f"{e} {_fmt(kept)} at p = {DROP}, {_fmt(at.get((e, 'dare', True, 0.99)))} at 0.99")
        checks.append(kept is not None and kept >= KEEP)
    return "sweep", "; ".join(parts), _verdict(checks)


def _no_rescale(at, near) -> tuple[str, str, str]:
    parts, checks = [], []
    for e in near:
        with_r, without = at[(e, "dare", True, DROP)], at.get((e, "dare", False, DROP))
        parts.append(f"{e} {_fmt(without)} without vs {_fmt(with_r)} with at p = {DROP}")
        if with_r is not None and without is not None:
            checks.append(without <= with_r - GAP)
    return "no_rescale", "; ".join(parts), _verdict(checks)


def _magnitude(at, near) -> tuple[str, str, str]:
    parts, checks = [], []
    for e in near:
        dare = at[(e, "dare", True, DROP)]
        mags = [at.get((e, "magnitude", r, DROP)) for r in (True, False)]
        parts.append(f"{e} DARE {_fmt(dare)} vs magnitude {_fmt(mags[0])} rescaled, {_fmt(mags[1])} not")
        known = [m for m in mags if m is not None]
        if dare is not None and known:
            checks.append(dare > max(known))
    return "magnitude", "; ".join(parts), _verdict(checks)


def _prestep(prestep) -> tuple[str, str, str]:
    by = {(p["method"], p["dare"]): p["held_in_normalised"] for p in prestep}
    parts, effects = [], []
    for method in dict.fromkeys(p["method"] for p in prestep):
        before, after = by.get((method, False)), by.get((method, True))
        parts.append(f"{method} {_fmt(before)} → {_fmt(after)}")
        if before is not None and after is not None:
            effects.append(after - before)
    if not effects:
        return "prestep", "; ".join(parts), "no data"
    helped = sum(d > PRESTEP_EFFECT for d in effects)
    hurt = sum(d < -PRESTEP_EFFECT for d in effects)
    verdict = _verdict([d > PRESTEP_EFFECT for d in effects])
    detail = f"{verdict} (helped {helped}, hurt {hurt}, within ±{PRESTEP_EFFECT} {len(effects) - helped - hurt})"
    return "prestep", "; ".join(parts), detail


def _far(at, far, experts, base_scores) -> tuple[str, str, str]:
    parts, checks = [], []
    for label in far:
        info = experts[label]
        base = base_scores.get(info["family"])
        if base is not None and info.get("accuracy") is not None and info["accuracy"] <= base:
            parts.append(f"{label} scores {info['accuracy']:.2f} on its task, the base {base:.2f}: it lost the task")
            continue
        sibling = next((n for n, e in experts.items() if not e.get("far") and e["family"] == info["family"]), None)
        kept, near = at[(label, "dare", True, DROP)], at.get((sibling, "dare", True, DROP))
        parts.append(f"{label} {_fmt(kept)} vs {sibling or 'no near expert'} {_fmt(near)} at p = {DROP}")
        if kept is not None and near is not None:
            checks.append(kept <= near - GAP)
    return "far", "; ".join(parts), _verdict(checks)


__all__ = ["CLAIM_RULES", "claim_rows"]
