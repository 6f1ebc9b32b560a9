"""Write a planned state dict as safetensors shards, one tensor at a time, in any order.

Every shard's header is known from the plan, so each file is created with its complete header and
its final size up front; :meth:`ShardedWriter.write` then ``pwrite``s a tensor's bytes straight
into place. Nothing is buffered and nothing is read back, so peak memory is the tensors in flight,
and ``pwrite`` (explicit offsets, no shared file position) lets several threads write at once.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import torch

from graftkit.errors import CheckpointError
from graftkit.io.mapping import map_tensor
from graftkit.io.shards import INDEX_FILE, plan_shards, shard_file_names, shard_layout
from graftkit.io.st_header import build_header
from graftkit.io.tensor_info import SAFETENSORS_FROM_DTYPE, Shape

JOURNAL_FILE = ".graft-progress.jsonl"


@dataclass(frozen=True)
class _Slot:
    path: Path
    fd: int
    shape: Shape
    dtype: torch.dtype
    offset: int  # absolute, in path
    nbytes: int


class ShardedWriter:
    """Pre-laid-out safetensors shards that tensors are written into.

    Args:
        out_dir: folder to write into (created if missing). Shards are named as
            ``save_pretrained`` names them; ``model.safetensors.index.json`` is written when there is
            more than one shard.
        entries: ``(name, shape, dtype)`` per output tensor, in the order to shard them.
        max_shard_size: byte budget per shard (see :func:`graftkit.io.shards.plan_shards`).
        metadata: the shards' ``__metadata__``; ``{"format": "pt"}`` by default, which
            ``from_pretrained`` expects.
        journal: append ``{"name", "crc32"}`` per finished tensor to ``.graft-progress.jsonl``
            in ``out_dir`` (costs one hash pass over the bytes; the file is removed by :meth:`finish`).
        resume: reuse shards an interrupted journaling writer left in ``out_dir`` when their
            headers are exactly the planned ones; tensors in the journal whose bytes still hash to
            the journaled CRC-32 count as written (see :attr:`written`), everything else is
            written again. Shards that do not match are recreated.
        durable: start writing each tensor to disk as soon as it is written, and ``fsync`` the
            shards in :meth:`finish`, so they survive a power loss. Off by default, as with
            ``save_pretrained``: the data then reaches the disk when the kernel flushes it, and
            a merge is not held to the disk's write speed.

    Use as a context manager: leaving normally calls :meth:`finish`, leaving by an exception
    calls :meth:`abort`.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        entries: Iterable[tuple[str, Sequence[int], torch.dtype]],
        max_shard_size: int,
        metadata: Mapping[str, str] | None = None,
        *,
        journal: bool = False,
        resume: bool = False,
        durable: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "pt"} if metadata is None else dict(metadata)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"safetensors metadata must map strings to strings, got {metadata!r}")
        plan = plan_shards(entries, max_shard_size)
        for shard in plan:
            for name, _, dtype in shard:
                if dtype not in SAFETENSORS_FROM_DTYPE:
                    raise ValueError(f"tensor {name!r}: safetensors cannot store dtype {dtype}")
        self.files = [self.out_dir / n for n in shard_file_names(len(plan))]
        self._slots: dict[str, _Slot] = {}
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self._busy: set[str] = set()
        self._done = False  # no more writes (finished or aborted)
        self._finished = False
        self._journal = self.out_dir / JOURNAL_FILE if journal else None
        self._durable = durable
        journaled = read_journal(self.out_dir) if resume else {}
        if not resume and self._journal is not None:
            self._journal.unlink(missing_ok=True)
        try:
            for path, shard in zip(self.files, plan, strict=True):
                reused = self._create_shard(path, shard, metadata, resume)
                if reused:
                    self._written |= _verified(path, reused, journaled)
        except BaseException:
            self.abort()
            raise

    def _create_shard(self, path: Path, shard: list, metadata: dict[str, str], resume: bool) -> list[_Slot]:
        """Lay out one shard; returns its slots when an existing file with this header was kept."""
        layout = shard_layout(shard)
        header = build_header(layout, metadata)
        size = len(header) + (layout[-1][4] if layout else 0)
        keep = resume and _has_header(path, header, size)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0) | (0 if keep else os.O_TRUNC)
        # Read-write only because a memory map to write into (destination) needs it; write() never
        # reads a shard back (resume reads separately).
        fd = os.open(path, flags, 0o644)
        self._fds.append(fd)
        if not keep:
            _pwrite_all(fd, memoryview(header), 0)
            os.ftruncate(fd, size)  # sparse until written
        slots = []
        for name, shape, dtype, begin, end in layout:
            self._slots[name] = _Slot(path, fd, shape, dtype, len(header) + begin, end - begin)
            slots.append((name, self._slots[name]))
        return slots if keep else []

    @property
    def written(self) -> frozenset[str]:
        """Names of the tensors written so far."""
        with self._lock:
            return frozenset(self._written)

    @property
    def names(self) -> frozenset[str]:
        """Names of all planned tensors."""
        return frozenset(self._slots)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one planned tensor into its place. Thread-safe; any order.

        Args:
            name: a planned tensor name, not written before.
            tensor: shape and dtype exactly as planned; any device and memory layout.

        Raises:
            CheckpointError: unknown name, second write, or shape/dtype different from the plan.
        """
        slot = self._claim(name, tuple(tensor.shape), tensor.dtype)
        try:
            # (numel,) bytes of the tensor, zero-copy for contiguous CPU tensors of any dtype.
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            _pwrite_all(slot.fd, memoryview(data), slot.offset)
            self._record(name, slot, data)
        finally:
            with self._lock:
                self._busy.discard(name)

    def destination(self, name: str) -> torch.Tensor:
        """A writable view of a planned tensor's place in its shard, to compute the tensor into.

        The view is a shared memory map of the file: what is stored in it lands in the page cache
        directly, with no output buffer to allocate and no copy to write. Call :meth:`commit`
        when it holds the final values. Thread-safe.

        Returns:
            A CPU tensor of the planned shape and dtype (its values are undefined until filled).
        """
        planned = self._slots.get(name)
        slot = self._claim(name, planned.shape, planned.dtype) if planned else self._unplanned(name)
        if slot.nbytes == 0:
            return torch.empty(slot.shape, dtype=slot.dtype)
        return map_tensor(slot.fd, slot.offset, slot.nbytes, slot.dtype, slot.shape, shared=True)

    def commit(self, name: str, tensor: torch.Tensor) -> None:
        """Mark a tensor computed into :meth:`destination` as written (journal, write-back)."""
        slot = self._slots[name]
        try:
            self._record(name, slot, tensor.reshape(-1).view(torch.uint8).numpy())
        finally:
            with self._lock:
                self._busy.discard(name)

    def _unplanned(self, name: str) -> NoReturn:
        raise CheckpointError(
            f"{self.out_dir}: tensor {name!r} is not in the output plan, so it has no place in any "
            "shard. Add it to the entries the ShardedWriter was created with."
        )

    def _claim(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> _Slot:
        """Check ``name`` may be written now with this shape and dtype, and mark it busy."""
        slot = self._slots.get(name)
        if slot is None:
            self._unplanned(name)
        if shape != slot.shape or dtype != slot.dtype:
            raise CheckpointError(
                f"{slot.path}: tensor {name!r} was planned as {slot.dtype} {list(slot.shape)} but the "
                f"tensor written is {dtype} {list(shape)}. Cast or reshape it to the plan, or fix the plan."
            )
        with self._lock:
            if self._done:
                raise CheckpointError(f"{self.out_dir}: the writer is closed; tensor {name!r} came too late.")
            if name in self._written or name in self._busy:
                raise CheckpointError(f"{slot.path}: tensor {name!r} is written twice. Write each tensor once.")
            self._busy.add(name)
        return slot

    def _record(self, name: str, slot: _Slot, data) -> None:
        """After a tensor's bytes are in place: start write-back, journal its CRC-32, mark it written."""
        if self._durable:
            _start_writeback(slot.fd, slot.offset, slot.nbytes)
        line = json.dumps({"name": name, "crc32": checksum(data)}) + "\n" if self._journal is not None else None
        with self._lock:
            self._written.add(name)
            if line is not None and self._journal is not None:
                with open(self._journal, "a") as f:
                    f.write(line)

    def finish(self) -> list[Path]:
        """Check every planned tensor was written, fsync (if ``durable``), write the index if sharded.

        Returns:
            The files written: shards, then the index if any.

        Raises:
            CheckpointError: some planned tensors were never written (listed in the message).
        """
        with self._lock:
            if self._finished:
                return self._outputs()
            if self._done:
                raise CheckpointError(f"{self.out_dir}: the writer was aborted; its shards are incomplete.")
            missing = sorted(set(self._slots) - self._written)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise CheckpointError(
                f"{self.out_dir}: {len(missing)} planned tensors were never written: {shown}{more}. "
                "The output is incomplete; write them before finishing (or abort)."
            )
        if self._durable:
            for fd in self._fds:
                os.fsync(fd)
        self.abort()
        self._finished = True
        if len(self.files) > 1:
            index = {
                "metadata": {"total_size": sum(s.nbytes for s in self._slots.values())},
                "weight_map": {n: self._slots[n].path.name for n in sorted(self._slots)},
            }
            (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        if self._journal is not None:
            self._journal.unlink(missing_ok=True)
        return self._outputs()

    close = finish

    def abort(self) -> None:
        """Release file handles without checks, leaving the (incomplete) files for the caller to remove."""
        with self._lock:
            self._done = True
            fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def _outputs(self) -> list[Path]:
        return self.files + ([self.out_dir / INDEX_FILE] if len(self.files) > 1 else [])

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.finish()
        finally:
            self.abort()


def read_journal(out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Tensor name → CRC-32 of the tensors a journaling :class:`ShardedWriter` finished in ``out_dir``.

    A torn last line (the process died while appending) is ignored.
    """
    path = Path(out_dir) / JOURNAL_FILE
    done: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["name"]] = rec["crc32"]
            except (ValueError, KeyError, TypeError):
                continue
    return done


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing these bytes to disk now (Linux: fadvise DONTNEED starts
    asynchronous writeback of dirty pages), so the fsync in :meth:`ShardedWriter.finish` has
    little left to do instead of flushing the whole model at the end."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        advise(fd, offset, nbytes, os.POSIX_FADV_DONTNEED)


def checksum(data) -> str:
    """CRC-32 of a buffer, as 8 hex digits. Enough to catch torn or corrupted writes (this is no
    defence against tampering), and twice as fast as SHA-256; it runs on the writer thread."""
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def _has_header(path: Path, header: bytes, size: int) -> bool:
    """True when ``path`` exists with exactly ``header`` at its start and the planned size."""
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_size == size and f.read(len(header)) == header
    except OSError:
        return False


def _verified(path: Path, slots: list[tuple[str, _Slot]], journaled: Mapping[str, str]) -> set[str]:
    """Names among ``slots`` whose bytes in ``path`` still match their journaled CRC-32."""
    ok = set()
    with open(path, "rb") as f:
        for name, slot in slots:
            want = journaled.get(name)
            if want is None:
                continue
            f.seek(slot.offset)
            if checksum(f.read(slot.nbytes)) == want:
                ok.add(name)
    return ok


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
