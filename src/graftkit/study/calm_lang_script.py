"""A synthetic "language" for the CALM low-resource study: a seeded, invertible transliteration of English.

English text is cut, greedily from the left, into the longest letter groups of :data:`GROUPS` (the 26
letters and frequent English bigrams and trigrams: ``the``, ``ing``, ``th``, ``er``, ...). Each group
becomes a syllable of :data:`SYLLABLES` (a consonant, then a vowel) through a bijection drawn from the
seed, so the language has its own vocabulary of letter patterns: ``"Ann has seven apples."`` reads like
``"Poda fiji cutuda cegegesuji."`` (seed 0), and one English word is always the same synthetic word.

Every syllable is two letters long, so a run of synthetic letters splits into syllables one way only and
:meth:`Script.decode` inverts :meth:`Script.encode` on any text. A capital on a group's first letter is
carried on its syllable's first letter (a group is matched only when its other letters are lower case);
every character that is not an ASCII letter (spaces, digits, punctuation) passes through unchanged.
"""

from __future__ import annotations

import random
import re
from functools import cached_property

TRIGRAMS = ("the", "ing", "and", "ion", "ent", "ere")
BIGRAMS = (
    *("th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of", "ed", "is"),
    *("it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le", "ve", "co", "me", "de"),
    *("hi", "ri", "ro", "ic", "ne", "ea"),
)
GROUPS = (*"abcdefghijklmnopqrstuvwxyz", *BIGRAMS, *TRIGRAMS)
"""English letter groups, each mapped to one syllable (72 of them)."""
SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvz" for v in "aeiou")
"""The synthetic syllables: consonant + vowel, all of length 2 (85 of them)."""
LONGEST = max(len(g) for g in GROUPS)

_LETTERS = re.compile(r"[A-Za-z]+")


def _is_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


class Script:
    """The transliteration of one seed: English letter groups ↔ synthetic syllables.

    Args:
        seed: chooses the bijection; the same seed always gives the same language.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @cached_property
    def forward(self) -> dict[str, str]:
        """English group → syllable (lower case)."""
        syllables = random.Random(f"calm-lang/script/{self.seed}").sample(SYLLABLES, len(GROUPS))
        return dict(zip(GROUPS, syllables, strict=True))

    @cached_property
    def backward(self) -> dict[str, str]:
        """Syllable → English group (lower case)."""
        return {s: g for g, s in self.forward.items()}

    def _group_at(self, text: str, start: int) -> str:
        """The longest group of :data:`GROUPS` that ``text`` holds at ``start`` (a letter), in its case."""
        for size in range(LONGEST, 1, -1):
            piece = text[start : start + size]
            plain_case = piece[1:].islower() and all(_is_letter(c) for c in piece)
            if len(piece) == size and plain_case and piece.lower() in self.forward:
                return piece
        return text[start]

    def encode(self, text: str) -> str:
        """``text`` in the synthetic language (English letters → syllables; everything else unchanged)."""
        out, i = [], 0
        while i < len(text):
            if not _is_letter(text[i]):
                out.append(text[i])
                i += 1
                continue
            group = self._group_at(text, i)
            syllable = self.forward[group.lower()]
            out.append(syllable.capitalize() if group[0].isupper() else syllable)
            i += len(group)
        return "".join(out)

    def decode(self, text: str) -> str:
        """The English that :meth:`encode` turned into ``text``.

        Raises:
            ValueError: ``text`` holds a run of letters that is not a sequence of this script's syllables.
        """

        def run(match: re.Match[str]) -> str:
            letters = match.group()
            pieces = [letters[k : k + 2] for k in range(0, len(letters), 2)]
            if any(len(p) != 2 or not p[1].islower() or p.lower() not in self.backward for p in pieces):
                raise ValueError(f"{letters!r} is not a word of script {self.seed} (syllables: {pieces})")
            groups = [self.backward[p.lower()] for p in pieces]
            return "".join(g.capitalize() if p[0].isupper() else g for g, p in zip(groups, pieces, strict=True))

        return _LETTERS.sub(run, text)
