"""Read and write safetensors headers without touching tensor data.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``), then
the tensor bytes; ``data_offsets`` are relative to the end of the header. Parsing checks every
field so that a corrupt or mislabelled file fails here, naming the file, rather than later as
garbage weights.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from graftkit.errors import CheckpointError
from graftkit.io.tensor_info import (
    DTYPE_FROM_SAFETENSORS,
    SAFETENSORS_FROM_DTYPE,
    Shape,
    TensorInfo,
    tensor_nbytes,
)

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
_LFS_MAGIC = b"version https://git-lfs"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGICS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # legacy torch.save


def _fail(path: Path, what: str, todo: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what} {todo}")


def check_not_lfs(path: Path, head: bytes) -> None:
    """Raise a :class:`CheckpointError` if ``head`` (a file's first bytes) is a git-LFS pointer."""
    if head.startswith(_LFS_MAGIC):
        raise _fail(
            path,
            "is a git-LFS pointer file, not the weights themselves.",
            "Fetch the real file (`git lfs pull` in the model repository, or download it with "
            "huggingface_hub) and try again.",
        )


def check_not_pickle(path: Path, head: bytes) -> None:
    """Raise a :class:`CheckpointError` if ``head`` is a torch.save pickle under a safetensors name."""
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGICS):
        raise _fail(
            path,
            "is a PyTorch pickle (torch.save) file with a .safetensors name.",
            "Rename it to pytorch_model.bin so graftkit loads it as a .bin checkpoint, or convert it to safetensors.",
        )


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate one safetensors header.

    Args:
        path: a ``.safetensors`` file.

    Returns:
        ``(tensors, metadata)``: a :class:`TensorInfo` per tensor (absolute offsets) in name order,
        and the ``__metadata__`` mapping (empty if absent).

    Raises:
        CheckpointError: the file is missing, an LFS pointer, a pickle, truncated or corrupt.
    """
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            check_not_lfs(path, head + f.read(len(_LFS_MAGIC) - 8))
            check_not_pickle(path, head)
            if len(head) < 8:
                raise _fail(path, f"is truncated ({file_size} bytes, no header).", "Download it again.")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(MAX_HEADER_BYTES, file_size - 8):
                raise _fail(
                    path,
                    f"has a corrupt header: it declares {header_len} header bytes but the file has {file_size} bytes.",
                    "The file is truncated or not safetensors; download it again.",
                )
            f.seek(8)
            raw = f.read(header_len)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e}). Check the path and permissions.") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"has a corrupt header (not JSON: {e}).", "Download the file again.") from e
    if not isinstance(header, dict):
        raise _fail(path, "has a corrupt header (JSON is not an object).", "Download the file again.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _fail(path, "has a corrupt __metadata__ (must map strings to strings).", "Re-save the file.")
    data_start = 8 + header_len
    tensors = {name: _parse_entry(path, name, entry, data_start) for name, entry in header.items()}
    _check_layout(path, tensors, file_size)
    return dict(sorted(tensors.items())), metadata


def _parse_entry(path: Path, name: str, entry: object, data_start: int) -> TensorInfo:
    where = f"has a corrupt header entry for tensor {name!r}"
    if not isinstance(entry, dict):
        raise _fail(path, f"{where} (not an object).", "Download the file again.")
    dtype = DTYPE_FROM_SAFETENSORS.get(entry.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise _fail(
            path,
            f"{where}: dtype {entry.get('dtype')!r} is not supported.",
            f"graftkit reads {', '.join(DTYPE_FROM_SAFETENSORS)}; convert the tensor to one of them.",
        )
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _fail(path, f"{where}: shape {shape!r} is not a list of sizes.", "Download the file again.")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
        raise _fail(path, f"{where}: data_offsets {offsets!r} are malformed.", "Download the file again.")
    begin, end = offsets
    nbytes = tensor_nbytes(tuple(shape), dtype)
    if end - begin != nbytes:
        raise _fail(
            path,
            f"{where}: data_offsets [{begin}, {end}] span {end - begin} bytes but shape {shape} of "
            f"{entry['dtype']} needs {nbytes}.",
            "The file is corrupt; download it again.",
        )
    return TensorInfo(name, tuple(shape), dtype, path, data_start + begin, nbytes)


def _check_layout(path: Path, tensors: dict[str, TensorInfo], file_size: int) -> None:
    """Tensors must not overlap each other and must end inside the file."""
    prev: TensorInfo | None = None
    for info in sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes)):
        if prev is not None and info.offset < prev.offset + prev.nbytes:
            raise _fail(
                path,
                f"has a corrupt header: tensors {prev.name!r} and {info.name!r} overlap.",
                "Download the file again.",
            )
        prev = info
    if prev is not None and prev.offset + prev.nbytes > file_size:
        raise _fail(
            path,
            f"is truncated: tensor {prev.name!r} ends at byte {prev.offset + prev.nbytes} but the file "
            f"has {file_size} bytes.",
            "Download it again (an interrupted download leaves files like this).",
        )


def build_header(layout: list[tuple[str, Shape, torch.dtype, int, int]], metadata: dict[str, str] | None) -> bytes:
    """Serialise a header: 8-byte length, then JSON padded with spaces to a multiple of 8.

    Args:
        layout: ``(name, shape, dtype, begin, end)`` per tensor, offsets relative to the data start.
        metadata: the ``__metadata__`` mapping (strings to strings), or None.

    Returns:
        The bytes that precede the tensor data; their length is a multiple of 8, so every tensor
        whose relative offset is aligned to its itemsize is aligned in the file too.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, shape, dtype, begin, end in layout:
        header[name] = {
            "dtype": SAFETENSORS_FROM_DTYPE[dtype],
            "shape": list(shape),
            "data_offsets": [begin, end],
        }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw
