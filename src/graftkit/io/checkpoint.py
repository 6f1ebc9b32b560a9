"""Lazy, thread-safe access to one Hugging Face checkpoint, tensor by tensor.

Opening a checkpoint reads headers only; :meth:`Checkpoint.read` then copies one tensor's bytes
straight from the file into a fresh tensor with ``pread``, so a 70B merge holds a few tensors in
memory, never a model. ``pread`` takes an explicit offset, so a prefetch thread pool can read
many tensors of one file at once through the same cached descriptor.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from graftkit.errors import CheckpointError
from graftkit.io.layout import Format, find_layout
from graftkit.io.mapping import map_tensor
from graftkit.io.pickle_bin import bin_infos, load_bin
from graftkit.io.quant import detect_quantization
from graftkit.io.st_header import read_header
from graftkit.io.tensor_info import TensorInfo


class Checkpoint:
    """A model's tensors, described by their headers and read one at a time.

    Use :meth:`open`; see :func:`graftkit.io.layout.find_layout` for which files are read and
    how competing weight sets are resolved.

    Attributes:
        path: the folder or file that was opened.
        format: ``"safetensors"``, ``"sharded-safetensors"`` or ``"bin"``.
        tensors: name → :class:`TensorInfo`, in name order.
        config: the folder's ``config.json`` (for a single file, the one beside it), or None.
        metadata: ``__metadata__`` of the first safetensors file (``{}`` for ``.bin``).
    """

    def __init__(
        self,
        path: Path,
        format: Format,
        tensors: dict[str, TensorInfo],
        config: dict[str, Any] | None,
        metadata: dict[str, str],
        bin_state: dict[Path, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.path, self.format, self.tensors = path, format, tensors
        self.config, self.metadata = config, metadata
        self._bin_state = bin_state or {}
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Open a model folder or a single ``.safetensors`` / ``.bin`` / ``.gguf`` file, reading headers only.

        A ``.gguf`` file opens as a :class:`graftkit.io.gguf_reader.GGUFCheckpoint`, which has this
        class's interface and dequantizes each tensor to float32 as it is read.

        Raises:
            CheckpointError: missing, ambiguous, corrupt or unsafe weights (the message names the file).
        """
        path = Path(path)
        layout = find_layout(path)
        if layout.format == "gguf":
            from graftkit.io.gguf_reader import GGUFCheckpoint

            return GGUFCheckpoint.open(path)  # type: ignore[return-value]  # same interface, see its docs
        tensors: dict[str, TensorInfo] = {}
        metadata: dict[str, str] | None = None
        bin_state: dict[Path, dict[str, torch.Tensor]] = {}
        for file in layout.files:
            if layout.format == "bin":
                bin_state[file] = load_bin(file)
                infos, meta = bin_infos(file, bin_state[file]), {}
            else:
                infos, meta = read_header(file)
            metadata = meta if metadata is None else metadata
            for name, info in infos.items():
                if name in tensors:
                    raise CheckpointError(
                        f"{path}: tensor {name!r} is stored twice, in {tensors[name].file.name} and "
                        f"{file.name}. The shards come from different saves; download the model again."
                    )
                tensors[name] = info
        for name, file in (layout.weight_map or {}).items():
            if name not in tensors or tensors[name].file != file:
                raise CheckpointError(
                    f"{file}: the shard index says it holds tensor {name!r}, but it does not. The index "
                    "and shards come from different saves; download the model again."
                )
        config_dir = path if path.is_dir() else path.parent
        config = _read_config(config_dir / "config.json")
        return cls(path, layout.format, dict(sorted(tensors.items())), config, metadata or {}, bin_state)

    @property
    def quantization(self) -> str | None:
        """The quantization scheme these weights use (see :func:`detect_quantization`), or None."""
        return detect_quantization(self.config, self.tensors)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Read one tensor into a fresh CPU tensor the caller owns, or into ``out``.

        Safe to call from many threads at once. Most of the cost of a fresh read of a page-cached
        file is first-touching the new allocation; a caller that recycles buffers can pass ``out``.

        Args:
            name: a key of :attr:`tensors`.
            out: optional contiguous CPU tensor of exactly the tensor's dtype and shape to fill.

        Returns:
            The tensor, shape ``tensors[name].shape``, in its storage dtype (``out`` if given).
        """
        info = self.tensors.get(name)
        if info is None:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        if info.offset < 0:
            self._check_open()
            src = self._bin_state[info.file][name]
            return src.clone(memory_format=torch.contiguous_format) if out is None else out.copy_(src)
        if out is None:
            out = torch.empty(info.shape, dtype=info.dtype)
        elif (
            tuple(out.shape) != info.shape
            or out.dtype != info.dtype
            or out.device.type != "cpu"
            or not out.is_contiguous()
        ):
            raise ValueError(
                f"read({name!r}, out=...): out must be a contiguous CPU {info.dtype} tensor of shape "
                f"{list(info.shape)}, got {out.dtype} {list(out.shape)} on {out.device}"
            )
        if info.nbytes:
            buf = out.reshape(-1).view(torch.uint8)  # (nbytes,) view of out's memory
            _pread_into(self._fd(info.file), buf.numpy(), info.offset, info)
        return out

    def read_mapped(self, name: str) -> torch.Tensor:
        """Map one tensor's bytes from the page cache without copying them (copy-on-write).

        Faster than :meth:`read` (no fresh allocation to fill, no copy): pages are mapped as the
        tensor is used. Writes to the tensor go to private pages, never to the file. The mapping
        covers this tensor only and is released with the tensor, so memory stays bounded by the
        tensors alive, not by the file. ``.bin`` checkpoints fall back to :meth:`read`.

        Returns:
            The tensor, shape ``tensors[name].shape``, in its storage dtype.
        """
        info = self.tensors.get(name)
        if info is None:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        if info.offset < 0 or info.nbytes == 0:
            return self.read(name)
        return map_tensor(self._fd(info.file), info.offset, info.nbytes, info.dtype, info.shape, shared=False)

    def close(self) -> None:
        """Close cached file descriptors and drop memory maps. Reading afterwards is an error."""
        with self._lock:
            self._closed = True
            fds, self._fds = self._fds, {}
            self._bin_state = {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, format={self.format!r}, tensors={len(self.tensors)})"

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"{self.path}: the checkpoint is closed; open it again to read tensors.")

    def _fd(self, file: Path) -> int:
        with self._lock:
            self._check_open()
            fd = self._fds.get(file)
            if fd is None:
                try:
                    fd = self._fds[file] = os.open(file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                except OSError as e:
                    raise CheckpointError(f"{file}: cannot be opened ({e}). Was it moved or deleted?") from e
            return fd


def _pread_into(fd: int, out: np.ndarray, offset: int, info: TensorInfo) -> None:
    """Fill ``out`` (a uint8 array) from ``fd`` at ``offset``; no shared file position, so thread-safe."""
    view, done = memoryview(out), 0
    while done < len(view):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view[done:]], offset + done)
        else:  # platforms without preadv: one extra copy
            chunk = os.pread(fd, min(len(view) - done, 1 << 30), offset + done)
            view[done : done + len(chunk)] = chunk
            got = len(chunk)
        if got == 0:
            raise CheckpointError(
                f"{info.file}: ended while reading tensor {info.name!r}; the file shrank after it was "
                "opened. Download it again."
            )
        done += got


def _read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: is not valid JSON ({e}). Download it again.") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: must be a JSON object. Download it again.")
    return config
