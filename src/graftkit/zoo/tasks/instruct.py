"""Instruction-tuning families: turn a pretrained base into an instruction-tuned one.

Disjoint from the held-in and held-out families (no family, instruction or input format is shared),
so an instruction-tuned base has learnt to follow the ``instruction / input / =`` format, not the tasks.
"""

from __future__ import annotations

import random

from graftkit.zoo.tasks._draw import DIGITS, LOWER, number, word
from graftkit.zoo.tasks.base import Kind, Task, register_task

VOWELS = "aeiou"


class Instruct(Task):
    kind: Kind = "instruct"


@register_task
class MaxDigit(Instruct):
    """The largest of 3–8 digits."""

    name = "max_digit"
    instruction = "largest digit"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = word(rng, 3, 8, DIGITS)
        return d, max(d)


@register_task
class Length(Instruct):
    """The number of letters of a word of 1–12 letters."""

    name = "length"
    instruction = "length"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = word(rng, 1, 12)
        return w, str(len(w))


@register_task
class Subtraction(Instruct):
    """``a-b`` with ``a >= b``, numbers of up to three digits."""

    name = "subtraction"
    instruction = "subtract"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = sorted((number(rng, 3), number(rng, 3)), reverse=True)
        return f"{a}-{b}", str(a - b)


@register_task
class Repeat(Instruct):
    """Repeat a short word 2–4 times: ``"3:ab"`` → ``"ababab"``."""

    name = "repeat"
    instruction = "repeat"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w, n = word(rng, 1, 3), rng.randint(2, 4)
        return f"{n}:{w}", w * n


@register_task
class KeepVowels(Instruct):
    """Keep only the vowels of a word (answer ``"-"`` when there are none)."""

    name = "keep_vowels"
    instruction = "vowels only"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = word(rng, 3, 10)
        return w, "".join(c for c in w if c in VOWELS) or "-"


@register_task
class LargerNumber(Instruct):
    """The larger of two numbers: ``"34,57"`` → ``"57"``."""

    name = "larger_number"
    instruction = "larger"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = number(rng, 3), number(rng, 3)
        return f"{a},{b}", str(max(a, b))


@register_task
class Parity(Instruct):
    """Whether a number is even or odd."""

    name = "parity"
    instruction = "even or odd"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a = number(rng, 4)
        return str(a), "odd" if a % 2 else "even"


@register_task
class Initials(Instruct):
    """First letters of 2–5 words: ``"cat dog egg"`` → ``"cde"``."""

    name = "initials"
    instruction = "first letters"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        words = [word(rng, 1, 4, LOWER) for _ in range(rng.randint(2, 5))]
        return " ".join(words), "".join(w[0] for w in words)
