"""Held-out families: no expert trains on these. Compositions of held-in skills and new wordings."""

from __future__ import annotations

import random

from graftkit.zoo.tasks._draw import DIGITS, kv_pairs, kv_text, mixed_case, number, word
from graftkit.zoo.tasks.base import Kind, Task, register_task


class HeldOut(Task):
    kind: Kind = "held_out"


@register_task
class ReverseSwap(HeldOut):
    """Composition of reversal and case swap: ``"abC"`` → ``"cBA"``."""

    name = "reverse_swap"
    instruction = "reverse, swap case"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = mixed_case(rng, 3, 7)
        return w, w[::-1].swapcase()


@register_task
class DigitSortDesc(HeldOut):
    """Composition of sorting and reversal: digits in descending order."""

    name = "digit_sort_desc"
    instruction = "sort, reverse"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = word(rng, 3, 8, DIGITS)
        return d, "".join(sorted(d, reverse=True))


@register_task
class LookupSum(HeldOut):
    """Composition of key lookup and addition: ``"a=3,b=4,c=5;a+b"`` → ``"7"``."""

    name = "lookup_sum"
    instruction = "lookup, add"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        pairs = kv_pairs(rng, 3, 5)
        a, b = rng.sample(list(pairs), 2)
        return f"{kv_text(pairs)};{a}+{b}", str(pairs[a] + pairs[b])


@register_task
class AdditionWords(HeldOut):
    """Addition under an unseen wording: ``"what is\\n12 plus 34\\n="`` → ``"46"``."""

    name = "addition_words"
    instruction = "what is"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = number(rng, 2), number(rng, 2)
        return f"{a} plus {b}", str(a + b)


@register_task
class ReversalWords(HeldOut):
    """Reversal under an unseen wording."""

    name = "reversal_words"
    instruction = "write it backwards"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = word(rng, 3, 8)
        return w, w[::-1]
