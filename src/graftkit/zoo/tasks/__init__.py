"""Synthetic task families, registered by name in :data:`TASKS`.

Each module registers one kind: ``held_in`` (expert skills), ``held_out`` (never trained on by an
expert), ``instruct`` (instruction tuning of bases), ``calm`` (CALM key-value datasets) and
``pretrain`` (unformatted text), ``chat_held_in`` and ``chat_held_out`` (the same skills asked in
chat turns, for a real LM, see :mod:`graftkit.zoo.tasks.chat`) and ``auxiliary`` (prerequisite
skills mixed into an expert's training, see :mod:`graftkit.zoo.tasks.auxiliary`).
"""

from __future__ import annotations

from graftkit.zoo.tasks import (  # noqa: F401  (registers)
    auxiliary,
    calm_kv,
    chat,
    held_in,
    held_out,
    instruct,
    pretrain,
    pretrain_skills,
)
from graftkit.zoo.tasks.base import KINDS, TASKS, Example, Kind, Split, Task, register_task, tasks_of_kind
from graftkit.zoo.tasks.calm_kv import KVConfig, KVTable
from graftkit.zoo.tasks.pretrain import pretrain_texts

__all__ = [
    "KINDS",
    "TASKS",
    "Example",
    "KVConfig",
    "KVTable",
    "Kind",
    "Split",
    "Task",
    "pretrain_texts",
    "register_task",
    "tasks_of_kind",
]
