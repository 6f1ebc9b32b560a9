"""Load ``pytorch_model.bin`` files safely: tensors only, never arbitrary pickled objects.

``torch.load(weights_only=True)`` refuses any pickle that would construct objects other than
tensors and plain containers, so a malicious ``__reduce__`` payload is never executed. Files are
memory-mapped, so opening a 10 GB shard costs address space, not RAM.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from graftkit.errors import CheckpointError
from graftkit.io.st_header import check_not_lfs
from graftkit.io.tensor_info import TensorInfo


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """Memory-map a ``torch.save`` state dict, refusing pickles that contain code or objects.

    Args:
        path: a ``.bin`` / ``.pt`` file holding ``{name: tensor}``.

    Returns:
        name → tensor (memory-mapped when the file uses torch's zip format).

    Raises:
        CheckpointError: the file is an LFS pointer, contains non-tensor objects, or is corrupt.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e}). Check the path and permissions.") from e
    check_not_lfs(path, head)
    try:
        try:
            state = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
                raise
            state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused. The pickle contains code or Python objects other than tensors, and "
            "graftkit loads .bin files with weights_only=True so that no code in a checkpoint runs. "
            "Use a safetensors copy of this model, or convert the file yourself after checking its "
            f"source. (torch said: {str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(
            f"{path}: is not a readable PyTorch checkpoint ({type(e).__name__}: {e}). Download it again."
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: holds a {type(state).__name__}, not a state dict of tensors. Save the model's "
            "state_dict() instead."
        )
    bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(
            f"{path}: entries {bad[:5]} are not tensors; graftkit needs a flat {{name: tensor}} state "
            "dict. Re-save it with model.state_dict()."
        )
    return state


def bin_infos(path: Path, state: dict[str, torch.Tensor]) -> dict[str, TensorInfo]:
    """One :class:`TensorInfo` per tensor of a loaded ``.bin`` state dict (``offset`` is -1)."""
    return {
        name: TensorInfo(name, tuple(t.shape), t.dtype, path, -1, t.numel() * t.element_size())
        for name, t in sorted(state.items())
    }
