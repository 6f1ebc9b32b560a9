"""TaskScore: derived values, JSON round trip and the rich table."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from graftkit.evaluate.results import (
    TaskScore,
    load_scores,
    save_scores,
    scores_from_json,
    scores_table,
    scores_to_json,
)

SCORES = [
    TaskScore("addition", 10, 8, model="m1", loss=0.125),
    TaskScore("reversal", 200, 0, split="validation", metric="loglik", model="m1"),
]


def test_accuracy_and_interval():
    s = SCORES[0]
    assert s.accuracy == 0.8
    assert s.ci95 == pytest.approx((0.490162, 0.943318), abs=1e-6)
    assert math.isnan(TaskScore("t", 0, 0).accuracy)
    with pytest.raises(ValueError, match="correct <= n"):
        TaskScore("t", 3, 4)


def test_json_round_trip(tmp_path):
    path = save_scores(SCORES, tmp_path / "sub" / "scores.json", meta={"seed": 0})
    assert load_scores(path) == SCORES
    doc = json.loads(path.read_text())
    assert doc["meta"] == {"seed": 0}
    assert doc["scores"][0]["accuracy"] == 0.8
    assert doc["scores"][0]["ci95"] == pytest.approx([0.490162, 0.943318], abs=1e-6)
    assert scores_from_json(scores_to_json(SCORES)) == SCORES


def test_json_derived_values_are_recomputed_not_trusted():
    doc = json.loads(scores_to_json(SCORES[:1]))
    doc["scores"][0]["accuracy"] = 0.1
    assert scores_from_json(json.dumps(doc))[0].accuracy == 0.8


def test_json_rejects_other_documents():
    with pytest.raises(ValueError, match="not a graftkit results document"):
        scores_from_json('{"scores": []}')


def _render(table) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_table_one_model_has_a_row_per_task():
    text = _render(scores_table(SCORES))
    lines = {line.split()[1]: line for line in text.splitlines() if "addition" in line or "reversal" in line}
    assert "80.0" in lines["addition"] and "49.0–94.3" in lines["addition"] and "0.125" in lines["addition"]
    assert "0.0" in lines["reversal"] and "validation" in lines["reversal"]


def test_table_several_models_is_a_grid():
    scores = [*SCORES, TaskScore("addition", 10, 10, model="m2")]
    text = _render(scores_table(scores))
    m2 = next(line for line in text.splitlines() if " m2 " in line)
    assert "100.0 (72.2–100.0)" in m2
    header = next(line for line in text.splitlines() if "model" in line)
    assert "addition" in header and "reversal" in header
