"""What a checkpoint header says about one tensor, and the safetensors dtype names.

Everything the planner needs (names, shapes, dtypes, sizes) comes from these records, built from
file headers alone: no tensor data is read to plan a merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

# The safetensors spelling of each dtype graftkit reads and writes.
DTYPE_FROM_SAFETENSORS: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_FROM_DTYPE: dict[torch.dtype, str] = {v: k for k, v in DTYPE_FROM_SAFETENSORS.items()}

Shape = tuple[int, ...]
TensorEntry = tuple[str, Shape, torch.dtype]
"""``(name, shape, dtype)``: one tensor of an output plan."""


def tensor_nbytes(shape: Shape, dtype: torch.dtype) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype`` (``math.prod(shape) * itemsize``)."""
    return math.prod(shape) * dtype.itemsize


def dtype_name(dtype: torch.dtype) -> str:
    """The name Hugging Face configs use for ``dtype``, e.g. ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as its checkpoint header describes it.

    Attributes:
        name: state-dict key, e.g. ``"model.layers.0.mlp.up_proj.weight"``.
        shape: dimensions, e.g. ``(intermediate, hidden)``.
        dtype: storage dtype in the file.
        file: the file that holds the tensor.
        offset: absolute byte offset of the tensor's data in ``file``; -1 for pickled ``.bin``
            files, whose layout graftkit does not address directly.
        nbytes: size of the tensor's data in bytes.
    """

    name: str
    shape: Shape
    dtype: torch.dtype
    file: Path
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)
