"""Generic unformatted text for pre-training, over the same alphabet as the tasks.

Documents mix pseudo-English sentences (from a seeded syllable vocabulary), number and letter
runs, ``name=value`` lists and small true equations: the raw material of the tasks without their
``instruction / input / =`` format, as web text is for a real language model.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator

from graftkit.zoo.tasks._draw import LOWER, number, word
from graftkit.zoo.tasks.base import Kind, Task, register_task

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def _vocabulary(seed: int = 0, size: int = 400) -> list[str]:
    rng = random.Random(f"pretrain-vocab/{seed}")
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.randint(1, 3)
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables)))
    return sorted(words)


_VOCAB = _vocabulary()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_VOCAB) for _ in range(rng.randint(3, 8))]
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = str(number(rng, 3))
    if rng.random() < 0.2:
        i = rng.randrange(len(words))
        words[i] = rng.choice(['"{}"', "({})", "'{}'", "{}:", "{},"]).format(words[i])
    if rng.random() < 0.1:
        words[0] = words[0].upper()
    return " ".join(words).capitalize() + rng.choice(".!?.")


def _equation(rng: random.Random) -> str:
    a, b = number(rng, 2), number(rng, 2)
    op = rng.choice("+-*")
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"{a}{op}{b}={result}" if rng.random() < 0.5 else f"{a} {op} {b} = {result}"


def _assignments(rng: random.Random) -> str:
    sep = rng.choice([",", ", ", "; "])
    return sep.join(f"{word(rng, 1, 3)}={number(rng, 2)}" for _ in range(rng.randint(2, 5)))


def _run(rng: random.Random) -> str:
    alphabet = rng.choice([string.digits, LOWER, string.ascii_uppercase])
    start = rng.randrange(len(alphabet) - 3)
    run = alphabet[start : start + rng.randint(3, 8)]
    return rng.choice([" ", "", ","]).join(run[::-1] if rng.random() < 0.3 else run)


def _misc(rng: random.Random) -> str:
    a, b = number(rng, 3), rng.randint(2, 9)
    return rng.choice(
        [
            f"{a}%{b}={a % b}",
            f"{a}/{b}",
            f"#{word(rng, 2, 6)}_{word(rng, 2, 6)}",
            f"<{word(rng, 1, 5)}>",
            f"{a} > {b}" if a > b else f"{a} < {b}",
            word(rng, 2, 8, string.ascii_letters),
        ]
    )


_FRAGMENTS = [(_sentence, 0.5), (_equation, 0.15), (_assignments, 0.1), (_run, 0.1), (_misc, 0.15)]


def pretrain_document(rng: random.Random) -> str:
    """One document: 1–3 lines of 1–3 fragments each (mostly 20–120 characters)."""
    makers, weights = zip(*_FRAGMENTS, strict=True)
    lines = []
    for _ in range(rng.randint(1, 3)):
        parts = [rng.choices(makers, weights)[0](rng) for _ in range(rng.randint(1, 3))]
        lines.append(" ".join(parts))
    return "\n".join(lines)


def pretrain_texts(seed: int = 0) -> Iterator[str]:
    """An endless, deterministic stream of pre-training documents."""
    rng = random.Random(f"pretrain/{seed}")
    while True:
        yield pretrain_document(rng)


@register_task
class PretrainText(Task):
    """Unformatted documents. The prompt is the document itself; the answer is empty."""

    name = "pretrain_text"
    kind: Kind = "pretrain"
    instruction = ""

    def sample(self, rng: random.Random) -> tuple[str, str]:
        return pretrain_document(rng), ""

    def format(self, text: str) -> str:
        return text
