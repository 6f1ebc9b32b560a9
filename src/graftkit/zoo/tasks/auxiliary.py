"""Auxiliary families: prerequisite skills mixed into an expert's training, never scored as a task.

``copy_span`` teaches a small model to copy a string it has not seen before: the induction-head
circuit (Olsson et al. 2022, "In-context Learning and Induction Heads") that finds an earlier
occurrence of the current token and copies what followed it. The zoo's pre-training text has too
little verbatim repetition of novel strings to grow that circuit, and ``key_lookup`` needs it; an
expert trained on ``key_lookup`` alone stays at ~40 % (docs/zoo.md). Disjoint from every other
kind: held-out tasks stay unseen.
"""

from __future__ import annotations

import random

from graftkit.zoo.tasks._draw import DIGITS, LOWER, word
from graftkit.zoo.tasks.base import Kind, Task, register_task


@register_task
class CopySpan(Task):
    """A string of 6–24 random letters and digits, then the same string again: ``"q3kz8w"`` → ``"q3kz8w"``.

    Unformatted (no instruction, no ``=``): nothing marks where the repetition starts, so the
    only way to predict it is to match the current token against the first copy (induction).
    With the task format a model learns to copy by position instead, and that does not help
    ``key_lookup`` (docs/zoo.md).
    """

    name = "copy_span"
    kind: Kind = "auxiliary"
    instruction = "copy"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        s = word(rng, 6, 24, LOWER + DIGITS)
        return s, s

    def format(self, text: str) -> str:
        return text
