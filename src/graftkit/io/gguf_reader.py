"""Read a llama.cpp GGUF file as a Hugging Face checkpoint: HF names, HF layout, float32 tensors.

Opening parses the header only (metadata and tensor infos, through ``gguf.GGUFReader``, which
memory-maps the file); :meth:`GGUFCheckpoint.read` dequantizes one tensor (``gguf.quants.dequantize``:
F32, F16, BF16, Q8_0, Q4_0/1, Q5_0/1, K-quants, IQ types) to float32 and undoes llama.cpp's Q/K row
order. The config is built from the metadata (:func:`graftkit.io.gguf_llama.config_from_metadata`).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from graftkit.errors import CheckpointError
from graftkit.io.gguf_llama import ARCH, config_from_metadata, from_gguf_rows, hf_name, rotary_heads
from graftkit.io.tensor_info import TensorInfo

FORMAT = "gguf"


class GGUFCheckpoint:
    """A GGUF file's tensors under their HF names, dequantized to float32 one at a time.

    Same interface as :class:`graftkit.io.Checkpoint` (open it with ``Checkpoint.open``).

    Attributes:
        path: the ``.gguf`` file.
        format: ``"gguf"``.
        tensors: HF name → :class:`TensorInfo` (HF shape, dtype float32, ``offset`` where the
            stored data starts in the file, ``nbytes`` of the float32 tensor), in name order.
        config: an HF Llama config dict built from the metadata.
        metadata: the metadata values as strings (arrays as their length).
        stored_types: HF name → the GGML type it is stored in (``"Q4_1"``, ``"F32"``, ...).
    """

    def __init__(
        self, path: Path, reader: Any, by_name: dict[str, Any], config: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        self.path, self.format, self.config = path, FORMAT, config
        self._reader, self._by_name = reader, by_name
        self._lock = threading.Lock()
        self.tensors = {
            name: TensorInfo(name, _hf_shape(t), torch.float32, path, int(t.data_offset), int(t.n_elements) * 4)
            for name, t in sorted(by_name.items())
        }
        self.stored_types = {name: t.tensor_type.name for name, t in self.tensors_raw()}
        self.metadata = {k: str(v) for k, v in meta.items()}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> GGUFCheckpoint:
        """Parse a GGUF file's header (no tensor data is read).

        Raises:
            CheckpointError: not a GGUF file, an architecture other than ``llama``, or tensors that
                have no Llama name (the message names the file).
        """
        import gguf

        path = Path(path)
        try:
            reader = gguf.GGUFReader(path)
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise CheckpointError(f"{path}: is not a readable GGUF file ({type(e).__name__}: {e}).") from e
        meta = scalar_metadata(reader)
        arch = meta.get("general.architecture")
        if arch != ARCH:
            raise CheckpointError(
                f"{path}: GGUF architecture {arch!r} (general.architecture) is not supported; graftkit reads "
                f"Llama-family GGUF files ({ARCH!r}). Convert the original Hugging Face checkpoint instead."
            )
        by_name, unknown = {}, []
        for t in reader.tensors:
            name = hf_name(t.name)
            if name is None:
                unknown.append(t.name)
            else:
                by_name[name] = t
        if unknown:
            raise CheckpointError(
                f"{path}: holds GGUF tensors a Llama model does not have: {', '.join(unknown[:8])}"
                f"{' …' if len(unknown) > 8 else ''}. (rope_freqs means scaled RoPE, which graftkit does not "
                "read from GGUF.) Use the original Hugging Face checkpoint."
            )
        config = config_from_metadata(meta, {t.name for t in reader.tensors}, path)
        return cls(path, reader, by_name, config, meta)

    def tensors_raw(self) -> list[tuple[str, Any]]:
        """``(HF name, gguf.ReaderTensor)`` pairs, in name order."""
        return [(name, self._by_name[name]) for name in self.tensors]

    @property
    def quantization(self) -> str | None:
        """None: tensors are dequantized on read, so to a merge they are plain float32 weights."""
        return None

    def type_counts(self) -> dict[str, int]:
        """How many tensors are stored in each GGML type, e.g. ``{"Q4_1": 210, "F32": 61}``."""
        return dict(Counter(self.stored_types.values()))

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Dequantize one tensor to float32, in HF layout. Safe to call from many threads at once.

        Args:
            name: a key of :attr:`tensors`.
            out: optional contiguous CPU float32 tensor of the tensor's shape to fill.

        Returns:
            The tensor, shape ``tensors[name].shape``, float32 (``out`` if given).
        """
        import gguf

        info = self.tensors.get(name)
        if info is None:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        with self._lock:
            if self._reader is None:
                raise CheckpointError(f"{self.path}: the checkpoint is closed; open it again to read tensors.")
            stored = self._by_name[name]
        values = gguf.quants.dequantize(stored.data, stored.tensor_type)
        # F32 data comes back as a view of the read-only map: copy it; other types are fresh arrays
        fresh = stored.tensor_type != gguf.GGMLQuantizationType.F32
        values = np.asarray(values, dtype=np.float32) if fresh else np.array(values, dtype=np.float32)
        tensor = torch.from_numpy(values).reshape(info.shape)
        heads = rotary_heads(name, self.config)
        if heads is not None:
            tensor = from_gguf_rows(tensor, heads)
        if out is None:
            return tensor.contiguous()
        if tuple(out.shape) != info.shape or out.dtype != torch.float32:
            raise ValueError(f"read({name!r}, out=...): out must be float32 {list(info.shape)}, got {out.dtype}")
        return out.copy_(tensor)

    read_mapped = read

    def close(self) -> None:
        """Drop the memory map. Reading afterwards is an error."""
        with self._lock:
            self._reader, self._by_name = None, {}

    def __enter__(self) -> GGUFCheckpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFCheckpoint({str(self.path)!r}, tensors={len(self.tensors)})"


def scalar_metadata(reader: Any) -> dict[str, Any]:
    """Metadata key → value for a ``gguf.GGUFReader``; arrays are given as their length.

    The tokenizer's vocabulary, token types and merges (tens of thousands of entries) are not
    decoded here.
    """
    import gguf

    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or not field.types:
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            meta[key] = len(field.data)
        else:
            meta[key] = field.contents()
    return meta


def _hf_shape(t: Any) -> tuple[int, ...]:
    # GGUF lists dimensions fastest-moving first; torch lists them the other way round
    return tuple(int(d) for d in reversed(t.shape.tolist()))
