"""Synthetic task families, registered by name in :data:`TASKS`.

Each module registers one kind: ``held_in`` (expert skills), ``held_out`` (never trained on by an
expert), ``instruct`` (instruction tuning of bases), ``calm`` (CALM key-value datasets) and
``pretrain`` (unformatted text).
"""

from __future__ import annotations

from graftkit.zoo.tasks import calm_kv, held_in, held_out, instruct, pretrain  # noqa: F401  (registers)
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
