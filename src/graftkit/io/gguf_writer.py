"""Write a planned Llama state dict as one llama.cpp GGUF file, one tensor at a time.

The whole header (hyperparameters, tokenizer, tensor infos with their types and sizes) is known
from the plan, so ``gguf.GGUFWriter`` writes it first; :meth:`GGUFFileWriter.write` then encodes
each tensor (Q/K rows reordered for llama.cpp's rotary layout, cast or quantized) and appends it
with ``GGUFWriter.write_tensor_data``. Only the tensor being encoded is in memory. GGUF data is
laid out in header order, so a tensor that arrives early waits (encoded) for the ones before it;
graftkit's executor writes in plan order, so nothing waits in practice.

Storage types follow llama.cpp's converter: 1-D tensors (norms, biases) stay F32; with ``q8_0``
a matrix whose rows are not a multiple of 32 values falls back to F16.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from graftkit.errors import CheckpointError, GraftError
from graftkit.io.gguf_llama import ARCH, check_config, gguf_name, metadata_from_config, rotary_heads, to_gguf_rows
from graftkit.io.gguf_tokenizer import MetaValue

GGUF_TYPES = ("f16", "bf16", "q8_0")
"""``--gguf-type`` choices: the storage type of the weight matrices."""


@dataclass(frozen=True)
class _Slot:
    gguf: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    heads: int | None  # rotary heads to reorder (q_proj / k_proj), else None


def storage_type(shape: Sequence[int], gguf_type: str) -> Any:
    """The GGML type a tensor of ``shape`` is stored in for ``gguf_type`` (see the module docs)."""
    import gguf

    q = gguf.GGMLQuantizationType
    if len(shape) < 2:
        return q.F32
    chosen = {"f16": q.F16, "bf16": q.BF16, "q8_0": q.Q8_0}[gguf_type]
    block, _ = gguf.GGML_QUANT_SIZES[chosen]
    return chosen if shape[-1] % block == 0 else q.F16


def encode(tensor: torch.Tensor, qtype: Any) -> np.ndarray:
    """A tensor's bytes as GGUF stores them in ``qtype``: a uint8 array of the GGML byte shape."""
    import gguf

    q = gguf.GGMLQuantizationType
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    if qtype == q.F32:
        data = t
    elif qtype == q.F16:
        data = t.to(torch.float16)
    elif qtype == q.BF16:
        data = t.to(torch.bfloat16)  # round to nearest even, as gguf.quants' BF16 does
    else:
        return gguf.quants.quantize(t.numpy(), qtype)
    return data.view(torch.uint8).numpy().reshape(*t.shape[:-1], -1)


class GGUFFileWriter:
    """A GGUF file whose header is written up front and whose tensors are appended as they come.

    Args:
        path: the file to create (truncated if it exists).
        entries: ``(HF name, shape, dtype)`` per output tensor, in the order to store them.
        config: the model's HF config (Llama: hyperparameters and head counts come from it).
        gguf_type: ``"f16"``, ``"bf16"`` or ``"q8_0"`` (see :func:`storage_type`).
        metadata: more entries, e.g. the tokenizer (:mod:`graftkit.io.gguf_tokenizer`) or the recipe.

    Raises:
        CheckpointError: not a Llama config, or tensors without a GGUF name (before anything is written).

    Use as a context manager: leaving normally calls :meth:`finish`, leaving by an exception
    calls :meth:`abort`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        entries: Iterable[tuple[str, Sequence[int], torch.dtype]],
        config: Mapping[str, Any] | None,
        gguf_type: str = "f16",
        metadata: Iterable[MetaValue] = (),
    ) -> None:
        import gguf

        if gguf_type not in GGUF_TYPES:
            raise GraftError(f"Unknown GGUF type {gguf_type!r}; choose one of {', '.join(GGUF_TYPES)}.")
        self.path = Path(path)
        check_config(config, str(self.path))
        assert config is not None
        self._slots: dict[str, _Slot] = {}
        unmapped = []
        for name, shape, _dtype in entries:
            target = gguf_name(name)
            if target is None:
                unmapped.append(name)
                continue
            shape = tuple(int(d) for d in shape)
            self._slots[name] = _Slot(target, shape, storage_type(shape, gguf_type), rotary_heads(name, config))
        if unmapped:
            raise CheckpointError(
                f"{self.path}: tensors {', '.join(repr(n) for n in unmapped[:8])} have no name in llama.cpp's Llama "
                "layout, so they cannot be written to GGUF. Write safetensors instead (drop --format gguf)."
            )
        self._order = list(self._slots)
        self._next = 0
        self._pending: dict[str, np.ndarray] = {}
        self._received: set[str] = set()
        self._lock = threading.Lock()
        self._done = False
        with _quiet_gguf():
            self._writer = writer = gguf.GGUFWriter(self.path, ARCH)
            try:
                self._write_header(writer, config, gguf_type, metadata)
            except BaseException:
                self.abort()
                raise

    def _write_header(self, writer: Any, config: Mapping[str, Any], gguf_type: str, metadata: Iterable[MetaValue]):
        import gguf

        t = gguf.GGUFValueType
        writer.add_type("model")
        for key, value in metadata_from_config(config):
            writer.add_key_value(key, value, t.FLOAT32 if isinstance(value, float) else t.UINT32)
        file_type = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}[gguf_type]
        writer.add_file_type(gguf.LlamaFileType[file_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value, vtype, sub in metadata:
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for slot in self._slots.values():
            byte_shape = gguf.quant_shape_to_byte_shape(slot.shape, slot.qtype)
            nbytes = int(np.prod(byte_shape))
            writer.add_tensor_info(slot.gguf, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=slot.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

    @property
    def names(self) -> frozenset[str]:
        """HF names of all planned tensors."""
        return frozenset(self._slots)

    def stored_type(self, name: str) -> str:
        """The GGML type name a planned tensor is stored in, e.g. ``"Q8_0"``."""
        return self._slots[name].qtype.name

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Encode one planned tensor and append it (or hold it until the tensors before it came).

        Raises:
            CheckpointError: unknown name, second write, or a shape other than planned.
        """
        slot = self._slots.get(name)
        if slot is None:
            raise CheckpointError(f"{self.path}: tensor {name!r} is not in the output plan.")
        if tuple(tensor.shape) != slot.shape:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} was planned as {list(slot.shape)} but is {list(tensor.shape)}."
            )
        if slot.heads is not None:
            tensor = to_gguf_rows(tensor, slot.heads)
        data = encode(tensor, slot.qtype)
        with self._lock:
            if self._done:
                raise CheckpointError(f"{self.path}: the writer is closed; tensor {name!r} came too late.")
            if name in self._received:
                raise CheckpointError(f"{self.path}: tensor {name!r} is written twice. Write each tensor once.")
            self._received.add(name)
            self._pending[name] = data
            while self._next < len(self._order) and self._order[self._next] in self._pending:
                self._writer.write_tensor_data(self._pending.pop(self._order[self._next]))
                self._next += 1

    def finish(self) -> Path:
        """Check every planned tensor was written and close the file.

        Raises:
            CheckpointError: some planned tensors were never written (listed in the message).
        """
        with self._lock:
            missing = [n for n in self._order if n not in self._received]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            raise CheckpointError(
                f"{self.path}: {len(missing)} planned tensors were never written: {shown}. The file is incomplete."
            )
        self.abort()
        return self.path

    def abort(self) -> None:
        """Close the file without checks, leaving it (incomplete) for the caller to remove."""
        with self._lock:
            self._done = True
            self._pending.clear()
        self._writer.close()

    def __enter__(self) -> GGUFFileWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.finish()
        finally:
            self.abort()


@contextmanager
def _quiet_gguf() -> Iterator[None]:
    """Silence ``gguf.GGUFWriter``'s INFO lines (endianness, the temporary file's name and size)."""
    logger = logging.getLogger("gguf.gguf_writer")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
