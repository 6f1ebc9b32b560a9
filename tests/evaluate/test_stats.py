"""Wilson intervals against hand-computed values; normalised scores."""

from __future__ import annotations

import math

import pytest

from graftkit.evaluate.stats import (
    held_in_normalised,
    held_out_normalised,
    mean_defined,
    normalised,
    wilson_interval,
)

# Hand-computed as the roots of (p̂ - p)² = z² p (1 - p) / n, i.e. of the quadratic
# (1 + z²/n) p² - (2p̂ + z²/n) p + p̂² = 0 with z = 1.959964 (a different route from the
# centre ± half-width formula in the code), rounded to 6 digits.
CASES = [
    (8, 10, 0.490162, 0.943318),
    (0, 10, 0.0, 0.277533),
    (10, 10, 0.722467, 1.0),
    (50, 100, 0.403832, 0.596168),
]


@pytest.mark.parametrize(("correct", "n", "low", "high"), CASES)
def test_wilson_matches_hand_computation(correct, n, low, high):
    got = wilson_interval(correct, n)
    assert got == pytest.approx((low, high), abs=1e-6)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_normalised_divides_and_guards_zero():
    assert normalised(0.43, 0.86) == pytest.approx(0.5)
    assert normalised(0.5, 0.0) is None
    assert normalised(0.5, math.nan) is None


def test_held_in_uses_experts_and_held_out_uses_base():
    merged = {"a": 0.4, "b": 0.3}
    assert held_in_normalised(merged, {"a": 0.8, "b": 0.0}) == {"a": pytest.approx(0.5), "b": None}
    assert held_out_normalised(merged, {"a": 0.2, "b": 0.6}) == {
        "a": pytest.approx(2.0),
        "b": pytest.approx(0.5),
    }
    with pytest.raises(KeyError, match="no expert score for task 'b'"):
        held_in_normalised(merged, {"a": 0.8})


def test_mean_defined_skips_and_counts_undefined():
    assert mean_defined([0.5, None, 1.0]) == (pytest.approx(0.75), 1)
    assert mean_defined([None]) == (None, 1)
