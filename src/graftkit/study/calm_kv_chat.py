"""The key-value datasets as chat prompts for a real BPE-tokenized anchor (SmolLM2).

SmolLM2's tokenizer splits every number into single digits (``"47"`` → ``4 7``, ``" 47"`` → ``␣ 4 7``)
and merges letters into BPE pieces (``" ab"`` is one token, ``" wqb"`` three). The expressions are
therefore written with a space on each side of every operator: each key and each number is its own
pre-token, so a key's pieces never merge with an operator, and digits read the same wherever they stand.
A prompt is one ChatML user turn holding ``question`` with the expression in place; the answer is bare
(a number, or for KV-Substitution the expression with values), and training ends it with the tokenizer's
eos (``<|im_end|>`` for SmolLM2), which closes the assistant's turn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from typing import Any

from graftkit.registry import Registry
from graftkit.study.calm_kv_data import kv_tasks
from graftkit.zoo.tasks.base import Kind, Task
from graftkit.zoo.tasks.calm_kv import KVConfig, KVSubstitution
from graftkit.zoo.tasks.chat import chat_prompt

_OPERATOR = re.compile(r"\s*([+\-*])\s*")


def spaced(expression: str) -> str:
    """``"ab+cde*7"`` → ``"ab + cde * 7"`` (expressions only: their operands are never negative)."""
    return _OPERATOR.sub(r" \1 ", expression).strip()


class ChatKV(Task):
    """A key-value task asked as ``question`` (with an ``{expression}`` slot) in one chat turn."""

    kind: Kind = "calm"
    instruction = ""
    prepend_bos = False  # the prompt starts with <|im_start|>, which is SmolLM2's bos

    def __init__(self, task: Any, question: str) -> None:
        self.task, self.question, self.name = task, question, task.name

    def sample(self, rng: random.Random) -> tuple[str, str]:
        text, answer = self.task.sample(rng)
        return spaced(text), spaced(answer) if isinstance(self.task, KVSubstitution) else answer

    def format(self, text: str) -> str:
        return chat_prompt(self.question.format(expression=text))


def chat_kv_tasks(kv: KVConfig, question: str) -> dict[str, Any]:
    """The study's datasets (:func:`~graftkit.study.calm_kv_data.kv_tasks`' names) as chat prompts."""
    return {name: ChatKV(task, question) for name, task in kv_tasks(kv, "").items()}


TASK_SETS: Registry[Callable[[KVConfig, str], dict[str, Any]]] = Registry("KV prompt style")
"""How the study's datasets are written, by name: ``plain`` (the zoo's ``instruction\\nexpr\\n=``, for the
character-level models; its text is the instruction) or ``chat`` (its text is the question)."""
TASK_SETS.add("plain", kv_tasks)
TASK_SETS.add("chat", chat_kv_tasks)


def datasets_of(spec: Mapping[str, Any], text: str, render: str = "chat") -> dict[str, Any]:
    """The datasets that unit inputs name, by dataset name: the language study's (``spec["lang"]``, a
    :class:`~graftkit.study.calm_lang_data.LangConfig` dict, asked as the question ``text``) or the
    key-value study's (``spec["kv"]``, a :class:`KVConfig` dict, written in the :data:`TASK_SETS` style
    ``render`` with ``text`` as its question or instruction)."""
    if "lang" in spec:
        from graftkit.study.calm_lang_data import LangConfig, lang_tasks

        return dict(lang_tasks(LangConfig(**spec["lang"]), text))
    return TASK_SETS.get(render)(KVConfig(**spec["kv"]), text)
