"""The texts ``graft check`` probes with: a texts file, given texts, zoo task samples or built-in sentences.

In order of preference: the lines of a texts file; prompt + answer samples of registered zoo tasks;
:data:`FALLBACK_TEXTS` when the zoo is absent or the tokenizer cannot encode the task texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graftkit.errors import GraftError

FALLBACK_TEXTS = (
    "The cat sat on the mat and looked out of the window.",
    "It was a cold morning, so she made a cup of tea.",
    "Two plus three is five, and five plus five is ten.",
    "The train leaves at nine, so we should be there by half past eight.",
    "He opened the book and began to read the first page.",
    "Water boils at one hundred degrees at sea level.",
    "Please close the door when you leave the room.",
    "The quick brown fox jumps over the lazy dog.",
    "Our garden has roses, tulips and a small apple tree.",
    "Monday comes after Sunday, and Tuesday comes after Monday.",
    "She wrote a letter to her friend who lives in the city.",
    "Rain is expected later today, so take an umbrella.",
)
"""Generic sentences for the probe when no texts file is given and no task texts can be used."""


class ProbeTextsError(GraftError):
    """The probe texts cannot be read or encoded."""


def load_probe_texts(
    tokenizer: Any, texts: Sequence[str] | str | Path | None, tasks: Sequence[str] | None
) -> tuple[str, list[str]]:
    """The probe texts by the order of preference above, as ``(where the texts came from, texts)``.

    Raises:
        ProbeTextsError: the texts file is missing or empty, no text is given, or task texts cannot be encoded.
    """
    if isinstance(texts, (str, Path)):
        path = Path(texts)
        if not path.is_file():
            raise ProbeTextsError(f"texts file {str(path)!r} does not exist; give a file with one text per line.")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        texts = [line for line in lines if line]
        if not texts:
            raise ProbeTextsError(f"texts file {str(path)!r} holds no text; write one probe text per line.")
        return str(path), texts
    if texts is not None:
        if not texts:
            raise ProbeTextsError("no probe texts given; pass at least one text, or None for the default probe.")
        return "given texts", list(texts)
    samples = task_samples(tasks)
    if samples and all(encodable(tokenizer, t) for t in samples):
        return f"zoo tasks ({', '.join(tasks) if tasks else 'held-in'})", samples
    if tasks:
        raise ProbeTextsError(
            f"the tokenizer cannot encode samples of tasks {', '.join(tasks)} (characters outside its "
            "vocabulary); pass --texts FILE with texts it can encode instead."
        )
    return "built-in sentences", list(FALLBACK_TEXTS)


def task_samples(tasks: Sequence[str] | None, per_task: int = 2) -> list[str]:
    """``prompt + answer`` of a few validation examples per task; [] when the zoo is absent."""
    try:
        from graftkit.zoo.tasks import TASKS, tasks_of_kind
    except ImportError:
        if tasks:
            raise ProbeTextsError("--tasks needs the zoo's task registry, which is not installed.") from None
        return []
    names = list(tasks) if tasks else tasks_of_kind("held_in")
    out = []
    for name in names:
        out += [e.prompt + e.answer for e in TASKS.get(name).examples("validation", per_task)]
    return out


def encodable(tokenizer: Any, text: str) -> bool:
    """The tokenizer maps ``text`` to known tokens and decodes it back (whitespace aside)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
        return False
    back = tokenizer.decode(ids, skip_special_tokens=True)
    return "".join(back.split()) == "".join(text.split())
