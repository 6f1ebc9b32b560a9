"""The examples a statistics pass streams: a registered task's train split, or a JSONL file.

Each example is ``prompt`` + ``answer`` (+ ``<eos>``), encoded by
:func:`graftkit.zoo.data.encode_examples` with labels on the answer and ``<eos>`` only, one
example per batch (no padding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import GraftError
from graftkit.zoo.tasks import TASKS, Example

SPLIT = "train"
SEED = 0


def source_problem(task: str | None, jsonl: str | Path | None) -> str | None:
    """Why ``task`` / ``jsonl`` do not name a usable data source, or None (no data is read)."""
    if (task is None) == (jsonl is None):
        return "give exactly one of a registered task (`task`) or a JSONL file of {prompt, completion} (`jsonl`)"
    if task is not None and task not in TASKS:
        close = TASKS.closest(task)
        hint = f" Did you mean {close!r}?" if close else ""
        return f"unknown task {task!r}.{hint} `graft tasks` lists them"
    if jsonl is not None and not Path(jsonl).is_file():
        return f"the JSONL file {str(jsonl)!r} does not exist"
    return None


def stat_examples(task: str | None, jsonl: str | Path | None, n: int) -> tuple[list[Example], dict[str, Any]]:
    """Up to ``n`` examples and a JSON-able record of where they came from.

    A task gives exactly ``n`` distinct examples of its train split (seed 0); a JSONL file gives
    its first ``n`` rows (all of them when it has fewer).

    Raises:
        GraftError: no or two sources, an unknown task, a missing or malformed file, ``n < 1``.
    """
    why = source_problem(task, jsonl)
    if why:
        raise GraftError(f"Statistics data: {why}.")
    if n < 1:
        raise GraftError(f"Statistics data: n must be at least 1, got {n}.")
    if task is not None:
        try:
            examples = TASKS.get(task).examples(SPLIT, n, seed=SEED)
        except ValueError as err:
            raise GraftError(f"Statistics data: {err}; ask for fewer examples (--n).") from None
        return examples, {"task": task, "split": SPLIT, "seed": SEED, "n": n}
    from graftkit.compose.data import read_jsonl

    try:
        rows = read_jsonl(jsonl)[:n]
    except (UnicodeDecodeError, ValueError, AttributeError) as err:
        raise GraftError(f"Statistics data: {jsonl} is not JSON lines ({err}).") from None
    examples = [Example(row["prompt"], row["completion"]) for row in rows]
    return examples, {"jsonl": str(jsonl), "n": len(examples)}


def encoded(
    examples: Sequence[Example], tokenizer: Any, seq_len: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """One batch per example: ``input_ids``, ``attention_mask``, ``labels``, each (1, T), on ``device``."""
    from graftkit.zoo.data import encode_examples

    for example in examples:
        batch = encode_examples([example], tokenizer, seq_len)
        yield {k: v.to(device) for k, v in batch.items()}
