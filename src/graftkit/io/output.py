"""Create an output folder (or a single output file) atomically, and check there is room for it.

A merge writes into a temporary sibling of the output folder and renames it into place only when
everything succeeded, so a crash or Ctrl-C never leaves a half-written model where a good one
(or nothing) was. A single-file output (GGUF) is built the same way, as a temporary sibling file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from graftkit.errors import OutputExistsError


def partial_folder(out: str | os.PathLike[str]) -> Path:
    """Where :func:`atomic_output` builds ``out`` when ``resumable``: ``.<name>.graft-partial``."""
    out = Path(out)
    return out.parent / f".{out.name}.graft-partial"


@contextmanager
def atomic_output(
    out: str | os.PathLike[str],
    overwrite: bool = False,
    *,
    resumable: bool = False,
    resume: bool = False,
    durable: bool = False,
) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the ``with`` block succeeds.

    The temporary folder is ``.<name>.graft-tmp-<pid>`` beside ``out`` (same filesystem, so the
    final rename is atomic). On success it is renamed to ``out``; with ``overwrite`` an existing
    ``out`` is first moved aside, then deleted once the new one is in place. On any exception
    (Ctrl-C included) the temporary folder is removed and an existing ``out`` is left untouched.

    With ``resumable`` the temporary folder is :func:`partial_folder` instead: a process killed
    outright (``kill -9``) leaves it behind, and a later call with ``resume`` yields it as it was
    so the caller can continue; without ``resume`` a leftover is discarded. Errors raised inside
    the block still remove it.

    Args:
        out: the final output folder.
        overwrite: replace ``out`` if it exists.
        resumable: build in the fixed :func:`partial_folder` rather than a per-process folder.
        resume: keep the contents of a leftover partial folder.
        durable: ``fsync`` every file in the folder before the rename and the parent folder after
            it, so the output survives a power loss (a crash of the process needs none of this).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False (checked before and after).
    """
    out = Path(out)
    _refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_folder(out) if resumable else out.parent / f".{out.name}.graft-tmp-{os.getpid()}"
    if not (resumable and resume):
        _remove(tmp)  # a leftover of an earlier run
    tmp.mkdir(exist_ok=True)
    try:
        yield tmp
        if durable:
            _sync_tree(tmp)
        _refuse_existing(out, overwrite)  # it may have appeared while we worked
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.graft-old-{os.getpid()}"
            _remove(old)
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)  # put the previous output back
                raise
            _remove(old)
        else:
            os.replace(tmp, out)
        if durable:
            _sync_path(out.parent)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_file(out: str | os.PathLike[str], overwrite: bool = False, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary file path that becomes ``out`` when the ``with`` block succeeds.

    The file is ``.<name>.graft-tmp-<pid>`` beside ``out``; on success it replaces ``out`` in one
    rename, on any exception it is removed and an existing ``out`` is left untouched.

    Args:
        out: the final file.
        overwrite: replace ``out`` if it exists (a folder is never replaced).
        durable: ``fsync`` the file before the rename and the parent folder after it.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is False, or ``out`` is a folder.
    """
    out = Path(out)
    if out.is_dir():
        raise OutputExistsError(f"{out}: is a folder; a single-file output cannot replace it. Choose a file path.")
    _refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.graft-tmp-{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        if durable:
            _sync_path(tmp)
        _refuse_existing(out, overwrite)
        if out.is_dir():
            raise OutputExistsError(f"{out}: became a folder while the file was written; nothing was replaced.")
        os.replace(tmp, out)
        if durable:
            _sync_path(out.parent)
    except BaseException:
        _remove(tmp)
        raise


def _sync_tree(folder: Path) -> None:
    """``fsync`` every file under ``folder``, then each folder, deepest first."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            _sync_path(Path(root) / name)
        _sync_path(Path(root))


def _sync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if not overwrite and (out.exists() or out.is_symlink()):
        raise OutputExistsError(
            f"{out}: already exists. Choose another output path, or pass --overwrite (overwrite=True) to replace it."
        )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def free_disk_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free
