"""Chat task families for a real instruction-tuned LM (SmolLM2): the zoo's families, rephrased.

Each family is a zoo family asked as a natural-language question inside the ChatML turn that
SmolLM2-Instruct reads (``<|im_start|>user ... <|im_end|>\\n<|im_start|>assistant\\n``, no system
turn, to keep sequences short); the answer is the bare result, ended by ``<|im_end|>``.

- ``chat_held_in``: the eight skills experts are fine-tuned on (``chat_`` + the zoo family's name;
  ``chat_uppercase`` stands in for the zoo's ``case_swap``, which a BPE tokenizer makes a
  character-level puzzle rather than a skill).
- ``chat_held_out``: new wordings and compositions of those skills; no expert trains on them.

Scoring is exact match on the extracted answer (:meth:`ChatTask.matches`), lm-eval's
"flexible-extract" idea: an output equal to the answer is right, and so is a sentence whose last
number (numeric answers), last quoted string, or else last word (one-word answers) equals it. An expert answers bare,
so for it this is plain exact match; the base, which answers in sentences ("The value of k is 7."),
gets credit for the right answer too, so that held-out scores can be normalised by the base's.
"""

from __future__ import annotations

import random
import re

from graftkit.zoo.tasks._draw import DIGITS, number
from graftkit.zoo.tasks._words import WORDS
from graftkit.zoo.tasks.base import Kind, Task, register_task

CONSONANTS = "bcdfghklmnprstvz"
VOWELS = "aeiou"
NUMERIC = re.compile(r"-?\d+")
DIGIT_LIST = re.compile(r"\d(?:[ ,]+\d)+|\d")
WORD = re.compile(r"[A-Za-z]+")
QUOTED = re.compile(r"['\"\u2018\u201c]([^'\"\u2019\u201d\n]+)['\"\u2019\u201d]")


def chat_prompt(question: str) -> str:
    """One ChatML user turn followed by the opening of the assistant's turn."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def chat_word(rng: random.Random) -> str:
    """A common English word, or (half the time) a pronounceable made-up word of 2-3 syllables."""
    if rng.random() < 0.5:
        return rng.choice(WORDS)
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))


def extract_answer(output: str, answer: str) -> str:
    """The part of ``output`` to compare with ``answer`` (see the module docstring)."""
    text = output.strip()
    if text == answer:
        return text
    if NUMERIC.fullmatch(answer):
        found = NUMERIC.findall(text)
    elif DIGIT_LIST.fullmatch(answer):
        found = [re.sub(r"[ ,]+", " ", m) for m in DIGIT_LIST.findall(text)]
    else:
        found = QUOTED.findall(text) or (re.findall(r"[A-Za-z]+", text) if WORD.fullmatch(answer) else [])
    return found[-1].strip() if found else text.rstrip(".!")


class ChatTask(Task):
    """A family asked in a chat turn; :meth:`sample` returns (question, answer)."""

    instruction = ""
    answer_margin = 24  # room for a sentence answer ("The sum of 12 and 34 is 46.")
    prepend_bos = False  # the prompt starts with <|im_start|>, SmolLM2's bos

    def format(self, text: str) -> str:
        return chat_prompt(text)

    def matches(self, output: str, answer: str) -> bool:
        return extract_answer(output, answer) == answer.strip()


class ChatHeldIn(ChatTask):
    kind: Kind = "chat_held_in"


class ChatHeldOut(ChatTask):
    kind: Kind = "chat_held_out"
    answer_margin = 40  # no model is trained on these: room for the base's worked answers


def _digits(rng: random.Random) -> list[str]:
    return [rng.choice(DIGITS) for _ in range(rng.randint(3, 6))]


def _values(rng: random.Random) -> dict[str, int]:
    keys = rng.sample("abcdefghkmnpqrstuvwxyz", rng.randint(3, 5))
    return {k: rng.randint(0, 9) for k in keys}


def _values_text(values: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


@register_task
class ChatAddition(ChatHeldIn):
    """``What is 57 + 31? Reply with the number only.`` → ``88``."""

    name = "chat_addition"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = number(rng, 2), number(rng, 2)
        return f"What is {a} + {b}? Reply with the number only.", str(a + b)


@register_task
class ChatReversal(ChatHeldIn):
    """``Spell the word 'garden' backwards. Reply with the result only.`` → ``nedrag``."""

    name = "chat_reversal"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = chat_word(rng)
        return f"Spell the word '{w}' backwards. Reply with the result only.", w[::-1]


@register_task
class ChatDigitSort(ChatHeldIn):
    """``Sort these digits from smallest to largest: 5 2 9 1. ...`` → ``1 2 5 9``."""

    name = "chat_digit_sort"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = _digits(rng)
        question = f"Sort these digits from smallest to largest: {' '.join(d)}. Reply with the digits only."
        return question, " ".join(sorted(d))


@register_task
class ChatCharCount(ChatHeldIn):
    """``How many times does the letter 'a' appear in 'banana'? ...`` → ``3``."""

    name = "chat_char_count"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = chat_word(rng)
        c = rng.choice(w) if rng.random() < 0.8 else rng.choice("abcdefghiklmnoprstu")
        return f"How many times does the letter '{c}' appear in '{w}'? Reply with the number only.", str(w.count(c))


@register_task
class ChatKeyLookup(ChatHeldIn):
    """``Here are some values: a=3, k=7, m=1. What is the value of k? ...`` → ``7``."""

    name = "chat_key_lookup"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        values = _values(rng)
        key = rng.choice(list(values))
        question = (
            f"Here are some values: {_values_text(values)}. What is the value of {key}? Reply with the number only."
        )
        return question, str(values[key])


@register_task
class ChatUppercase(ChatHeldIn):
    """``Write the word 'garden' in capital letters. Reply with the word only.`` → ``GARDEN``."""

    name = "chat_uppercase"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = chat_word(rng)
        return f"Write the word '{w}' in capital letters. Reply with the word only.", w.upper()


@register_task
class ChatModulo(ChatHeldIn):
    """``What is the remainder when 4817 is divided by 25? ...`` → ``17`` (divisors of 100, as the zoo's)."""

    name = "chat_modulo"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, m = rng.randint(0, 9999), rng.choice((2, 4, 5, 10, 20, 25, 50))
        return f"What is the remainder when {a} is divided by {m}? Reply with the number only.", str(a % m)


@register_task
class ChatLetterDouble(ChatHeldIn):
    """``Write every letter of 'cat' twice. Reply with the result only.`` → ``ccaatt``."""

    name = "chat_letter_double"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = chat_word(rng)[:6]
        return f"Write every letter of '{w}' twice. Reply with the result only.", "".join(c + c for c in w)


@register_task
class ChatAdditionWords(ChatHeldOut):
    """Addition in a new wording, with no format instruction: ``Add 12 and 34.`` → ``46``."""

    name = "chat_addition_words"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = number(rng, 2), number(rng, 2)
        return f"Add {a} and {b}.", str(a + b)


@register_task
class ChatLookupSum(ChatHeldOut):
    """Composition of key lookup and addition: ``a=3, b=4, c=5. What is a + b?`` → ``7``."""

    name = "chat_lookup_sum"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        values = _values(rng)
        a, b = rng.sample(list(values), 2)
        return f"{_values_text(values)}. What is {a} + {b}?", str(values[a] + values[b])


@register_task
class ChatUppercaseWords(ChatHeldOut):
    """Upper-casing in a new wording: ``Convert 'garden' to upper case.`` → ``GARDEN``."""

    name = "chat_uppercase_words"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = chat_word(rng)
        return f"Convert '{w}' to upper case.", w.upper()


@register_task
class ChatDigitSortDesc(ChatHeldOut):
    """Composition of sorting and reversal: ``Sort these digits from largest to smallest: 5 2 9.`` → ``9 5 2``."""

    name = "chat_digit_sort_desc"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = _digits(rng)
        return f"Sort these digits from largest to smallest: {' '.join(d)}.", " ".join(sorted(d, reverse=True))


@register_task
class ChatReversalWords(ChatHeldOut):
    """Reversal in a new wording: ``Write 'garden' in reverse order.`` → ``nedrag``."""

    name = "chat_reversal_words"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        w = chat_word(rng)
        return f"Write '{w}' in reverse order.", w[::-1]


@register_task
class ChatSubtraction(ChatHeldOut):
    """A skill next to addition that no expert trains: ``What is 57 - 31?`` → ``26``."""

    name = "chat_subtraction"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = sorted((number(rng, 2), number(rng, 2)), reverse=True)
        return f"What is {a} - {b}? Reply with the number only.", str(a - b)


@register_task
class ChatMultiplication(ChatHeldOut):
    """Multiplying by one digit: ``What is 17 times 8?`` → ``136``."""

    name = "chat_multiplication"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(2, 99), rng.randint(2, 9)
        return f"What is {a} times {b}? Reply with the number only.", str(a * b)


@register_task
class ChatNextNumber(ChatHeldOut):
    """Counting: ``Which number comes right after 47?`` → ``48``."""

    name = "chat_next_number"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a = rng.randint(0, 999)
        return f"Which number comes right after {a}? Reply with the number only.", str(a + 1)


@register_task
class ChatLarger(ChatHeldOut):
    """Comparison: ``Which is larger, 57 or 31?`` → ``57``."""

    name = "chat_larger"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.sample(range(100), 2)
        return f"Which is larger, {a} or {b}? Reply with the number only.", str(max(a, b))


@register_task
class ChatSumWords(ChatHeldOut):
    """Addition in another wording: ``What is the sum of 12 and 34?`` → ``46``."""

    name = "chat_sum_words"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = number(rng, 2), number(rng, 2)
        return f"What is the sum of {a} and {b}?", str(a + b)
