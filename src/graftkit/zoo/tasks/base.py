"""The task interface: seeded generators of (prompt, answer) pairs with disjoint splits."""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, TypeVar

from graftkit.errors import UnknownNameError
from graftkit.registry import Registry

Split = Literal["train", "validation", "test"]
Kind = Literal["held_in", "held_out", "instruct", "calm", "pretrain", "auxiliary", "chat_held_in", "chat_held_out"]
KINDS: tuple[Kind, ...] = (
    "held_in",
    "held_out",
    "instruct",
    "calm",
    "pretrain",
    "auxiliary",
    "chat_held_in",
    "chat_held_out",
)


@dataclass(frozen=True)
class Example:
    """One example. ``prompt`` is everything the model reads; ``answer`` what it must emit."""

    prompt: str
    answer: str


class Task(ABC):
    """A registered task family.

    Subclasses set ``name``, ``kind`` and ``instruction`` and implement :meth:`sample`, which
    draws the raw input and its answer from ``rng``. Splits are disjoint by construction: an
    example belongs to the split chosen by a hash of its prompt (80/10/10).
    """

    name: str
    kind: Kind
    instruction: str
    revision: int = 0
    """Bumped when the generator changes what it draws; models trained on it are then rebuilt."""
    answer_margin: int = 4
    """Tokens a model may generate beyond the longest answer before decoding stops."""
    prepend_bos: bool = True
    """Whether evaluation encodes prompts as ``bos + prompt`` (the zoo's tokenizer adds it in training)."""

    @abstractmethod
    def sample(self, rng: random.Random) -> tuple[str, str]:
        """Draw one (input text, answer) pair."""

    def format(self, text: str) -> str:
        """The prompt the model reads for an input (instruction phrasing + input)."""
        return f"{self.instruction}\n{text}\n="

    def matches(self, output: str, answer: str) -> bool:
        """Whether a model's ``output`` is right: exact match after stripping whitespace."""
        return output.strip() == answer.strip()

    def split_of(self, prompt: str) -> Split:
        bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "little") % 10
        return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")

    def examples(self, split: Split, n: int, seed: int = 0) -> list[Example]:
        """``n`` distinct examples of ``split``, the same for the same (task, split, n, seed)."""
        rng = random.Random(f"{self.name}/{split}/{seed}")
        seen: set[str] = set()
        out: list[Example] = []
        for _ in range(200 * n + 1000):
            text, answer = self.sample(rng)
            prompt = self.format(text)
            if prompt in seen or self.split_of(prompt) != split:
                continue
            seen.add(prompt)
            out.append(Example(prompt, answer))
            if len(out) == n:
                return out
        raise ValueError(f"task {self.name!r}: could not draw {n} distinct {split} examples")

    def draw(self, split: Split, rng: random.Random) -> Example:
        """One example of ``split`` drawn from ``rng``; repeats are possible (for training streams)."""
        for _ in range(10_000):
            text, answer = self.sample(rng)
            prompt = self.format(text)
            if self.split_of(prompt) == split:
                return Example(prompt, answer)
        raise ValueError(f"task {self.name!r}: no {split} example in 10000 draws")


TASKS: Registry[Task] = Registry("task")

T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    """Class decorator: register one instance of a :class:`Task` subclass under ``cls.name``."""
    TASKS.add(cls.name, cls())
    return cls


def tasks_of_kind(kind: Kind) -> list[str]:
    """Sorted names of the registered tasks of one kind ("held_in", "held_out", ...)."""
    if kind not in KINDS:
        raise UnknownNameError("task kind", kind, list(KINDS))
    return [name for name, task in TASKS.items() if task.kind == kind]
