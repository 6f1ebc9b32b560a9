"""Held-in families: the skills experts are fine-tuned on, one expert per family."""

from __future__ import annotations

import random

from graftkit.zoo.tasks._draw import DIGITS, kv_pairs, kv_text, mixed_case, number, word
from graftkit.zoo.tasks.base import Kind, Task, register_task


class HeldIn(Task):
    kind: Kind = "held_in"


@register_task
class Addition(HeldIn):
    """Add two numbers of up to two digits: ``"add\\n57+31\\n="`` → ``"88"``."""

    name = "addition"
    instruction = "add"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = number(rng, 2), number(rng, 2)
        return f"{a}+{b}", str(a + b)


@register_task
class Reversal(HeldIn):
    """Reverse a lower-case word of 3–8 letters."""

    name = "reversal"
    instruction = "reverse"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = word(rng, 3, 8)
        return w, w[::-1]


@register_task
class DigitSort(HeldIn):
    """Sort 3–8 digits in ascending order."""

    name = "digit_sort"
    instruction = "sort"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = word(rng, 3, 8, DIGITS)
        return d, "".join(sorted(d))


@register_task
class CharCount(HeldIn):
    """Count a character in a string over ``abcd``: ``"count\\nb:abbcb\\n="`` → ``"3"``."""

    name = "char_count"
    instruction = "count"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        s = word(rng, 4, 10, "abcd")
        c = rng.choice("abcd")
        return f"{c}:{s}", str(s.count(c))


@register_task
class KeyLookup(HeldIn):
    """Look a key up in a list given in the prompt and write its entry: ``"a=3,k=7;k"`` → ``"k=7"``.

    Writing the entry as the list does makes the answer a literal repetition (``k=`` is followed
    by ``7`` in the list), the pattern induction heads copy. Revision 0 answered the bare value,
    ``"7"``. Trained alone, neither gets past ~40 % at size ``s`` (1M parameters), however long:
    the zoo's pre-training text never grows the induction circuit. The zoo recipes therefore mix
    the auxiliary ``copy_span`` family into this expert (:data:`graftkit.zoo.build.AUXILIARY`),
    and it learns the task (docs/zoo.md).
    """

    name = "key_lookup"
    instruction = "lookup"
    revision = 1

    def sample(self, rng: random.Random) -> tuple[str, str]:
        pairs = kv_pairs(rng, 3, 5)
        key = rng.choice(list(pairs))
        return f"{kv_text(pairs)};{key}", f"{key}={pairs[key]}"


@register_task
class CaseSwap(HeldIn):
    """Swap the case of every letter of a mixed-case word."""

    name = "case_swap"
    instruction = "swap case"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = mixed_case(rng, 3, 8)
        return w, w.swapcase()


@register_task
class Modulo(HeldIn):
    """Remainder of a number below 10,000 by a divisor of 100: ``"4817%25"`` → ``"17"``.

    The remainder depends on the last two digits alone, so the rule can be learnt from the
    training split and applied to unseen numbers. (Revision 0 used divisors 2–9 of numbers below
    500: a 1M-parameter model memorised its training pairs and reached only 55 % on the test split.)
    """

    name = "modulo"
    instruction = "mod"
    revision = 1

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, m = rng.randint(0, 9999), rng.choice((2, 4, 5, 10, 20, 25, 50))
        return f"{a}%{m}", str(a % m)


@register_task
class LetterDouble(HeldIn):
    """Copy a word with a rule: write every letter twice (``"abc"`` → ``"aabbcc"``)."""

    name = "letter_double"
    instruction = "double"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = word(rng, 2, 6)
        return w, "".join(c + c for c in w)
