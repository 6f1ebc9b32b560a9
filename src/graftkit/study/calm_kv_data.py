"""Data of the CALM key-value study: its five test sets, distinct examples and the bridge's composition rows."""

from __future__ import annotations

import random
from typing import Any

from graftkit.study.calm_kv_settings import CalmKVSettings
from graftkit.zoo.tasks.calm_kv import KVArithmetic, KVConfig, KVSubstitution, NumericArithmetic

EVAL_SETS = ("kv_substitution", "numeric_arithmetic", "kv_arithmetic", "kv_arithmetic_k20", "kv_arithmetic_k80")
"""Datasets every row is scored on: ``_k20`` uses only the composition's keys, ``_k80`` only held-out keys."""


def study_tasks(settings: CalmKVSettings) -> dict[str, Any]:
    """The study's tasks by dataset name (:data:`EVAL_SETS`), over the settings' key table."""
    return kv_tasks(settings.kv(), settings.instruction)


def kv_tasks(kv: KVConfig, instruction: str) -> dict[str, Any]:
    """The study's tasks by dataset name (:data:`EVAL_SETS` and the control data) over the key table ``kv``,
    every prompt starting with ``instruction``."""
    tasks = {
        "kv_substitution": KVSubstitution(kv, name="kv_substitution"),
        "numeric_arithmetic": NumericArithmetic(kv, name="numeric_arithmetic"),
        "kv_arithmetic": KVArithmetic(kv, name="kv_arithmetic"),
        "kv_arithmetic_k20": KVArithmetic(kv, keys="train", name="kv_arithmetic_k20"),
        "kv_arithmetic_k80": KVArithmetic(kv, keys="other", name="kv_arithmetic_k80"),
        "kv_substitution_k20": KVSubstitution(kv, keys="train", name="kv_substitution_k20"),  # control data
    }
    for task in tasks.values():
        task.instruction = instruction  # instance attribute: the registered tasks are untouched
    return tasks


def distinct_examples(task: Any, split: str, n: int, seed: int = 0, patience: int = 20_000) -> list[Any]:
    """Up to ``n`` distinct examples of ``split``: :meth:`Task.examples`' stream, stopping once ``patience``
    draws in a row bring nothing new (a small key set has fewer than ``n`` distinct expressions)."""
    from graftkit.zoo.tasks import Example

    rng = random.Random(f"{task.name}/{split}/{seed}")
    seen: set[str] = set()
    out, idle = [], 0
    while len(out) < n and idle < patience:
        text, answer = task.sample(rng)
        prompt = task.format(text)
        if prompt in seen or task.split_of(prompt) != split:
            idle += 1
            continue
        seen.add(prompt)
        out.append(Example(prompt, answer))
        idle = 0
    return out


COMPOSITION_DATA = "kv_arithmetic_k20"
"""The composition data of the paper's experiment: KV-Arithmetic over the 20% keys."""


def composition_rows(settings: CalmKVSettings, dataset: str = COMPOSITION_DATA) -> list[dict[str, str]]:
    """A bridge's training data: distinct train-split examples of ``dataset`` (by default
    KV-Arithmetic over the 20% keys only; the control bridge uses ``kv_substitution_k20``)."""
    return task_rows(study_tasks(settings)[dataset], settings.n_composition, settings.seed)


def task_rows(task: Any, n: int, seed: int) -> list[dict[str, str]]:
    """Up to ``n`` distinct train-split examples of ``task`` as ``{"prompt", "completion"}`` rows."""
    examples = distinct_examples(task, "train", n, seed=seed)
    return [{"prompt": e.prompt, "completion": e.answer} for e in examples]


def keys_in(text: str) -> list[str]:
    """The key names in an expression prompt (maximal runs of lowercase letters after the instruction)."""
    body = text.split("\n", 1)[-1]
    keys, run = [], ""
    for ch in body + " ":
        if ch.islower():
            run += ch
        elif run:
            keys.append(run)
            run = ""
    return keys
