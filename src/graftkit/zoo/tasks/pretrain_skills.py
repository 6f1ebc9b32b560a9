"""A pre-training corpus that already holds the held-in skills, in unformatted text.

The zoo's plain corpus (:mod:`~graftkit.zoo.tasks.pretrain`) has true equations but none of the
other skills, so an expert must learn its skill from scratch, moves far from its base and merges
badly. Here a third of the fragments state a held-in skill's input and output in running text
("tobi reversed is ibot", "b occurs 3 times in abbcb"), never in the tasks' ``instruction /
input / =`` format: the base learns the skills, and its experts need only learn the format. This is
how a real LM's web text relates to its instruction data (the regime of Yadav et al. 2024).
"""

from __future__ import annotations

import random

from graftkit.zoo.tasks._draw import DIGITS, kv_pairs, kv_text, mixed_case, number, word
from graftkit.zoo.tasks.base import Kind, Task, register_task
from graftkit.zoo.tasks.pretrain import pretrain_document


def _skill(rng: random.Random) -> str:
    w = word(rng, 3, 8)
    pick = rng.randrange(8)
    if pick == 0:
        a, b = number(rng, 2), number(rng, 2)
        return f"{a} plus {b} makes {a + b}"
    if pick == 1:
        return f"{w} reversed is {w[::-1]}"
    if pick == 2:
        d = word(rng, 3, 8, DIGITS)
        return f"{d} in order is {''.join(sorted(d))}"
    if pick == 3:
        s, c = word(rng, 4, 10, "abcd"), rng.choice("abcd")
        return f"{c} occurs {s.count(c)} times in {s}"
    if pick == 4:
        pairs = kv_pairs(rng, 3, 5)
        key = rng.choice(list(pairs))
        return f"in {kv_text(pairs)} the {key} entry is {key}={pairs[key]}"
    if pick == 5:
        m = mixed_case(rng, 3, 8)
        return f"{m} with cases swapped is {m.swapcase()}"
    if pick == 6:
        a, m = rng.randint(0, 9999), rng.choice((2, 4, 5, 10, 20, 25, 50))
        return f"{a} leaves {a % m} after dividing by {m}"
    w = w[:6]
    return f"{w} doubled is {''.join(c + c for c in w)}"


def skills_document(rng: random.Random) -> str:
    """A plain-corpus document with skill statements mixed in (about a third of the fragments)."""
    lines = pretrain_document(rng).split("\n")
    extra = [" ".join(_skill(rng) for _ in range(rng.randint(1, 3))) for _ in range(len(lines))]
    return "\n".join(line for pair in zip(lines, extra, strict=True) for line in pair)


@register_task
class PretrainSkills(Task):
    """Unformatted documents with the held-in skills stated in running text; the answer is empty."""

    name = "pretrain_skills"
    kind: Kind = "pretrain"
    instruction = ""

    def sample(self, rng: random.Random) -> tuple[str, str]:
        return skills_document(rng), ""

    def format(self, text: str) -> str:
        return text
