"""Small random draws shared by the task modules."""

from __future__ import annotations

import random
import string

LOWER = string.ascii_lowercase
DIGITS = string.digits


def word(rng: random.Random, lo: int, hi: int, alphabet: str = LOWER) -> str:
    """A random string of ``lo``–``hi`` characters from ``alphabet``."""
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def number(rng: random.Random, max_digits: int) -> int:
    """A non-negative integer whose digit count is uniform in 1..``max_digits``."""
    digits = rng.randint(1, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def mixed_case(rng: random.Random, lo: int, hi: int) -> str:
    """A random word whose letters are each upper- or lower-case at random."""
    return "".join(c.upper() if rng.random() < 0.5 else c for c in word(rng, lo, hi))


def kv_pairs(rng: random.Random, lo: int, hi: int) -> dict[str, int]:
    """``lo``–``hi`` distinct single-letter keys, each with a random digit value."""
    keys = rng.sample(LOWER, rng.randint(lo, hi))
    return {k: rng.randint(0, 9) for k in keys}


def kv_text(pairs: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs.items())
