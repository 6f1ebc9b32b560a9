"""A content-addressed cache of built models, resumable when a build is killed.

An entry's key hashes everything that decides its weights: a stage name, the inputs given (preset,
``TrainConfig``, task names, the parent's weights hash) and :data:`CODE_VERSION`. A finished entry
is a folder ``<root>/zoo/<stage>-<key>``; a build writes into ``<...>.partial`` (outputs, plus
checkpoints under ``work/``) and renames it into place only when done, so a folder that exists is
complete, and a killed build finds its ``.partial`` folder and resumes from the checkpoint there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

CODE_VERSION = "zoo-1"
"""Bump when tasks, data or training change what a build produces; old entries are then ignored."""

ENTRY_FILE = "entry.json"


def cache_root() -> Path:
    """``$GRAFTKIT_CACHE`` if set, else ``~/.cache/graftkit``."""
    env = os.environ.get("GRAFTKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graftkit"


def content_key(inputs: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-able ``inputs`` (pydantic models are dumped first)."""

    def plain(value: Any) -> Any:
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"cannot hash {type(value).__name__} in cache inputs")

    text = json.dumps({**inputs, "code_version": CODE_VERSION}, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def weights_hash(folder: Path) -> str:
    """Hash of a model folder's weights and config (``*.safetensors`` and ``config.json``)."""
    digest = hashlib.sha256()
    files = sorted(Path(folder).glob("*.safetensors")) + [Path(folder) / "config.json"]
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes building the same entry (POSIX ``flock``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Cache:
    """Built models by content key under ``root/zoo`` (``root`` defaults to :func:`cache_root`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        self.dir = self.root / "zoo"

    def path(self, stage: str, inputs: Mapping[str, Any]) -> Path:
        """Where the entry for these inputs lives (whether or not it is built)."""
        return self.dir / f"{stage}-{content_key(inputs)}"

    def get(self, stage: str, inputs: Mapping[str, Any]) -> Path | None:
        path = self.path(stage, inputs)
        return path if (path / ENTRY_FILE).exists() else None

    def build(self, stage: str, inputs: Mapping[str, Any], fn: Callable[[Path, Path], object]) -> Path:
        """The entry for ``inputs``, running ``fn(out_dir, work_dir)`` only if it is not built yet.

        ``fn`` writes its outputs into ``out_dir`` and may keep checkpoints in ``work_dir``; both
        persist across a killed build, so calling ``build`` again resumes. ``work_dir`` is deleted
        once ``fn`` returns.
        """
        final = self.path(stage, inputs)
        if (final / ENTRY_FILE).exists():
            return final
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(final.with_name(final.name + ".lock")):
            if (final / ENTRY_FILE).exists():  # another process finished it while we waited
                return final
            partial = final.with_name(final.name + ".partial")
            work = partial / "work"
            work.mkdir(parents=True, exist_ok=True)
            fn(partial, work)
            shutil.rmtree(work)
            entry = {"stage": stage, "key": final.name, "inputs": json.loads(_dump(inputs))}
            (partial / ENTRY_FILE).write_text(json.dumps(entry, indent=2) + "\n")
            if final.exists():  # a stale folder without entry.json (not ours): replace it
                shutil.rmtree(final)
            os.rename(partial, final)
        return final


def _dump(inputs: Mapping[str, Any]) -> str:
    return json.dumps(
        inputs,
        sort_keys=True,
        default=lambda v: v.model_dump(mode="json") if hasattr(v, "model_dump") else str(v),
    )
