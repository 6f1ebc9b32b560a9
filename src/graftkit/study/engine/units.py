"""Study units: one function call on JSON-able inputs, cached by content and resumable when killed.

A unit names its function by import path (``"package.module:function"``) so that any process (a
Ray worker, a rerun after a crash) can call it again. The function has the signature
``fn(inputs: dict, out_dir: Path, work_dir: Path) -> dict``: it may write files it wants kept into
``out_dir`` and resumable checkpoints into ``work_dir``, and returns a JSON-able result.

:class:`UnitStore` keeps finished units under ``<root>/study/units/<name>/`` with their
``result.json``. A run writes into ``<name>.partial/`` and renames it into place only when the
function has returned, so a folder that exists is complete and a killed run leaves its
``.partial`` folder (checkpoints included) for the next run to resume from.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftkit.errors import GraftError
from graftkit.study.engine._files import json_default
from graftkit.zoo.cache import _dump, _locked, cache_root, content_key

RESULT_FILE = "result.json"

UnitFn = Callable[[dict[str, Any], Path, Path], Mapping[str, Any]]


@dataclass(frozen=True)
class Unit:
    """One cached call of a study function.

    Attributes:
        fn: import path of the function, ``"package.module:function"``.
        inputs: JSON-able keyword data passed to it (pydantic models and paths are allowed).
        label: a human-readable name for progress and reports; not part of the key.
    """

    fn: str
    inputs: Mapping[str, Any]
    label: str = ""

    @property
    def key(self) -> str:
        """Content hash of ``fn`` and ``inputs`` (independent of dict order)."""
        return content_key({"fn": self.fn, "inputs": self.inputs})

    @property
    def name(self) -> str:
        """Folder name of the unit: the function's short name and the key, e.g. ``score-1f3a...``."""
        short = self.fn.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        return f"{short}-{self.key}"

    def __hash__(self) -> int:  # inputs is a dict, so hash by content key
        return hash(self.key)


def resolve(fn: str) -> UnitFn:
    """Import the function named by ``"package.module:function"``.

    Raises:
        GraftError: the string is malformed, the module does not import, or the name is missing.
    """
    module_name, sep, attr = fn.partition(":")
    if not sep or not module_name or not attr:
        raise GraftError(f"study unit function {fn!r} must be written 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise GraftError(f"cannot import study unit function {fn!r}: {exc}") from exc
    if not callable(target):
        raise GraftError(f"study unit function {fn!r} is a {type(target).__name__}, not a function")
    return target


class UnitStore:
    """Finished units under ``root/study/units`` (``root`` defaults to :func:`cache_root`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        self.dir = self.root / "study" / "units"

    def path(self, unit: Unit) -> Path:
        """The unit's folder (whether or not it has run): its ``result.json`` and the files it wrote."""
        return self.dir / unit.name

    def result_path(self, unit: Unit) -> Path:
        """The folder holding the files the unit wrote, e.g. ``store.result_path(unit) / "scores.json"``."""
        return self.path(unit)

    def partial_path(self, unit: Unit) -> Path:
        """Where an unfinished run writes (kept when the run is killed)."""
        return self.dir / f"{unit.name}.partial"

    def get(self, unit: Unit) -> dict[str, Any] | None:
        """The unit's result if it has completed, else None."""
        file = self.path(unit) / RESULT_FILE
        if not file.exists():
            return None
        return json.loads(file.read_text())["result"]

    def run(self, unit: Unit) -> dict[str, Any]:
        """The unit's result, calling its function only if it has not completed yet.

        Processes running the same unit wait on a lock; the second finds the first's result.
        ``result.json`` holds ``{"unit": {fn, inputs, label}, "seconds": wall time, "result": ...}``;
        the returned result is the one read back from JSON, so a fresh and a cached run agree.
        """
        cached = self.get(unit)
        if cached is not None:
            return cached
        fn = resolve(unit.fn)
        final = self.path(unit)
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(final.with_name(final.name + ".lock")):
            cached = self.get(unit)
            if cached is not None:  # another process finished it while we waited
                return cached
            partial = self.partial_path(unit)
            work = partial / "work"
            work.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            result = fn(dict(unit.inputs), partial, work)
            seconds = time.perf_counter() - start
            if not isinstance(result, Mapping):
                raise TypeError(f"study unit {unit.fn!r} returned {type(result).__name__}, not a dict")
            shutil.rmtree(work, ignore_errors=True)
            record = {
                "unit": {"fn": unit.fn, "inputs": json.loads(_dump(unit.inputs)), "label": unit.label},
                "seconds": round(seconds, 3),
                "result": result,
            }
            text = json.dumps(record, indent=2, default=json_default) + "\n"
            (partial / RESULT_FILE).write_text(text)
            if final.exists():  # a stale folder without result.json (not ours): replace it
                shutil.rmtree(final)
            os.rename(partial, final)
        return json.loads(text)["result"]
