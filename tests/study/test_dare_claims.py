"""The DARE paper's claims beside our numbers: each verdict follows its stated rule."""

from __future__ import annotations

from graftkit.study.dare_claims import claim_rows

EXPERTS = {
    "add": {"family": "add", "far": False, "accuracy": 0.9},
    "up": {"family": "up", "far": False, "accuracy": 0.8},
    "add@far": {"family": "add", "far": True, "accuracy": 0.7},
}


def _sweep(points):
    return [
        {"expert": e, "sparsifier": s, "rescale": r, "drop_rate": p, "normalised": v}
        for (e, s, r, p), v in points.items()
    ]


def _by_claim(rows):
    return {r["claim"]: r for r in rows}


def test_verdicts_follow_the_rules():
    points = {
        ("add", "dare", True, 0.9): 0.95,
        ("add", "dare", True, 0.99): 0.9,
        ("add", "dare", False, 0.9): 0.3,  # 0.65 below the rescaled: collapse
        ("add", "magnitude", True, 0.9): 0.2,
        ("add", "magnitude", False, 0.9): 0.5,
        ("up", "dare", True, 0.9): 0.6,  # below 0.85: the sweep claim fails for this expert
        ("up", "dare", False, 0.9): 0.55,  # only 0.05 below: no collapse
        ("up", "magnitude", True, 0.9): 0.1,
        ("up", "magnitude", False, 0.9): 0.7,  # magnitude beats DARE here
        ("add@far", "dare", True, 0.9): 0.1,  # 0.85 below its near sibling
    }
    prestep = [
        {"method": "linear", "dare": False, "held_in_normalised": 0.5},
        {"method": "linear", "dare": True, "held_in_normalised": 0.7},
        {"method": "ties", "dare": False, "held_in_normalised": 0.8},
        {"method": "ties", "dare": True, "held_in_normalised": 0.5},
        {"method": "fisher", "dare": False, "held_in_normalised": 0.8},
        {"method": "fisher", "dare": True, "held_in_normalised": 0.82},
    ]
    rows = _by_claim(claim_rows(_sweep(points), prestep, EXPERTS, {"sweep": "~0.9 kept"}))
    assert rows["sweep"]["verdict"] == "mixed" and rows["sweep"]["paper"] == "~0.9 kept"
    assert "add 0.95 at p = 0.9, 0.90 at 0.99" in rows["sweep"]["ours"]
    assert rows["no_rescale"]["verdict"] == "mixed"
    assert rows["magnitude"]["verdict"] == "mixed"
    assert rows["prestep"]["verdict"] == "mixed (helped 1, hurt 1, within ±0.05 1)"
    assert "linear 0.50 → 0.70" in rows["prestep"]["ours"]
    assert rows["far"]["verdict"] == "holds" and "add@far 0.10 vs add 0.95" in rows["far"]["ours"]


def test_all_experts_agreeing_hold_and_missing_parts_say_no_data():
    points = {(e, "dare", True, 0.9): 0.9 for e in ("add", "up")}
    points |= {(e, "dare", False, 0.9): 0.1 for e in ("add", "up")}
    rows = _by_claim(claim_rows(_sweep(points), [], {k: v for k, v in EXPERTS.items() if not v["far"]}, {}))
    assert rows["sweep"]["verdict"] == rows["no_rescale"]["verdict"] == "holds"
    assert rows["magnitude"]["verdict"] == rows["prestep"]["verdict"] == rows["far"]["verdict"] == "no data"
    points[("up", "dare", True, 0.9)] = 0.5
    assert _by_claim(claim_rows(_sweep(points), [], EXPERTS, {}))["sweep"]["verdict"] == "mixed"
    points[("add", "dare", True, 0.9)] = 0.5
    assert _by_claim(claim_rows(_sweep(points), [], EXPERTS, {}))["sweep"]["verdict"] == "does not hold"


def test_a_far_expert_that_lost_its_task_gives_no_data():
    points = {("add", "dare", True, 0.9): 0.9, ("add@far", "dare", True, 0.9): 0.3}
    row = _by_claim(claim_rows(_sweep(points), [], EXPERTS, {}, base_scores={"add": 0.4}))["far"]
    assert row["verdict"] == "holds"
    row = _by_claim(claim_rows(_sweep(points), [], EXPERTS, {}, base_scores={"add": 0.7}))["far"]
    assert row["verdict"] == "no data" and "lost the task" in row["ours"]
