"""Data of the CALM language study: arithmetic word problems in English and in a synthetic language.

A problem is a one-sentence story with two numbers written as words and one operation carried by the verb
(``"Ann has seven apples and gets five more. How many apples does Ann have now?"`` → ``12``). Three
datasets are asked in the same ChatML user turn (``question`` with the problem in its ``{problem}`` slot):

- ``translation``: the problem in the synthetic language → the English problem (what ``m_A`` learns);
- ``english_task``: the English problem → its number (what ``m_B`` learns);
- ``synthetic_task``: the problem in the synthetic language → its number (the composition's task).

``translation`` and ``synthetic_task`` share their prompts, as KV-Substitution and KV-Arithmetic do in the
key-value study, so ``m_A`` reads a composition prompt exactly as it reads its own training prompts. The
train / validation / test split of every dataset is decided by the English problem, so a test problem is
unseen by every model and bridge in every script.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from graftkit.study.calm_lang_script import Script
from graftkit.zoo.tasks.base import Kind, Split, Task
from graftkit.zoo.tasks.chat import chat_prompt

NAMES = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kim", "Leo")
ITEMS = ("apples", "books", "cards", "coins", "cups", "eggs", "hats", "keys", "pens", "shells", "stamps", "toys")
TEMPLATES = {
    "+": (
        "{name} has {a} {items} and gets {b} more. How many {items} does {name} have now?",
        "{name} had {a} {items}, then found {b} more. How many {items} does {name} have?",
    ),
    "-": (
        "{name} has {a} {items} and gives away {b}. How many {items} does {name} have now?",
        "{name} had {a} {items}, then lost {b}. How many {items} does {name} have?",
    ),
    "*": ("{name} buys {a} boxes with {b} {items} in each. How many {items} does {name} have?",),
}
"""Problem wordings by operation; ``-`` problems never go below zero."""
ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven")
ONES += ("twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
DATASETS = ("translation", "english_task", "synthetic_task")
Dataset = Literal["translation", "english_task", "synthetic_task"]


def number_words(n: int) -> str:
    """``n`` (0–99) in English words: ``7`` → ``"seven"``, ``42`` → ``"forty-two"``."""
    if not 0 <= n <= 99:
        raise ValueError(f"number_words covers 0..99, not {n}")
    if n < 20:
        return ONES[n]
    tens, units = divmod(n, 10)
    return TENS[tens] + (f"-{ONES[units]}" if units else "")


@dataclass(frozen=True)
class LangConfig:
    """What defines one replicate's language and problems."""

    seed: int = 0
    """Seeds the script (:class:`Script`); the problems' streams are seeded by dataset name and split."""
    max_number: int = 20
    """Operands are drawn from 1..max_number (``-`` keeps the first operand at least the second)."""
    ops: str = "+-"


def problem(config: LangConfig, rng: random.Random) -> tuple[str, int]:
    """One English word problem over ``config`` and its answer."""
    op = rng.choice(config.ops)
    a, b = rng.randint(1, config.max_number), rng.randint(1, config.max_number)
    if op == "-" and a < b:
        a, b = b, a
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    wording = rng.choice(TEMPLATES[op])
    text = wording.format(name=rng.choice(NAMES), items=rng.choice(ITEMS), a=number_words(a), b=number_words(b))
    return text, answer


class LangTask(Task):
    """One dataset of :data:`DATASETS`, asked as ``question`` in a chat turn; split by the English problem."""

    kind: Kind = "calm"
    instruction = ""
    prepend_bos = False  # the prompt starts with <|im_start|>, which is SmolLM2's bos

    def __init__(self, config: LangConfig, question: str, name: Dataset) -> None:
        self.config, self.question, self.name = config, question, name
        self.synthetic = name != "english_task"

    @cached_property
    def script(self) -> Script:
        return Script(self.config.seed)

    def sample(self, rng: random.Random) -> tuple[str, str]:
        english, answer = problem(self.config, rng)
        text = self.script.encode(english) if self.synthetic else english
        return text, english if self.name == "translation" else str(answer)

    def format(self, text: str) -> str:
        return chat_prompt(self.question.format(problem=text))

    def english(self, prompt: str) -> str:
        """The English problem inside a prompt of this dataset (decoded when it is synthetic)."""
        head, tail = self.format("{problem}").split("{problem}")
        text = prompt[len(head) : len(prompt) - len(tail)]
        return self.script.decode(text) if self.synthetic else text

    def split_of(self, prompt: str) -> Split:
        return super().split_of(self.english(prompt))


def lang_tasks(config: LangConfig, question: str) -> dict[str, LangTask]:
    """The study's datasets (:data:`DATASETS`) over one replicate's language, asked as ``question``."""
    return {name: LangTask(config, question, name) for name in DATASETS}
