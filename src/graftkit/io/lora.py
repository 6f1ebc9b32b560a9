"""A PEFT LoRA adapter seen as a full checkpoint: ``base + ΔW``, computed tensor by tensor.

Opening reads ``adapter_config.json`` and the adapter file's header only; the adapter's tensors
(``base_model.model.<module>.lora_A.weight``, ``.lora_B.weight``, or ``lora_embedding_A/B`` for an
embedding) are mapped to the base tensors they change (``<module>.weight``) and their shapes checked
against the base's header. :meth:`LoraExpert.read` then computes, for one tensor,
``base + scale · B A`` (transposed for ``fan_in_fan_out`` and for embeddings, as PEFT does), in
float32; every tensor the adapter does not touch is the base's, read as the base reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import CheckpointError
from graftkit.io.checkpoint import Checkpoint
from graftkit.io.layout import BIN_INDEX, BIN_SINGLE, ST_INDEX, ST_SINGLE
from graftkit.io.lora_config import ADAPTER_CONFIG, AdapterConfig, read_adapter_config
from graftkit.io.tensor_info import TensorInfo

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
_FACTORS = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_embedding_A": "A", ".lora_embedding_B": "B"}


def is_adapter(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a PEFT adapter folder (it holds ``adapter_config.json``)."""
    try:
        return (Path(path) / ADAPTER_CONFIG).is_file()
    except (OSError, ValueError):  # a name too long …: no adapter; opening it reports the path
        return False


@dataclass(frozen=True)
class LoraTarget:
    """One base tensor an adapter changes: ``ΔW = scale · B A``, transposed when ``transpose``.

    Attributes:
        module: the module's name, e.g. ``"model.layers.0.self_attn.q_proj"``.
        a_key, b_key: the adapter's keys of A (r, in) and B (out, r).
        rank: r. scale: alpha / r (alpha / sqrt(r) with rsLoRA).
        transpose: ΔW = (B A)ᵀ: ``fan_in_fan_out`` (weights stored (in, out)) or an embedding
            (A is (r, vocab), B is (dim, r), the weight is (vocab, dim)).
    """

    module: str
    a_key: str
    b_key: str
    rank: int
    scale: float
    transpose: bool


class LoraExpert:
    """``base + ΔW`` for every tensor, with the interface of :class:`graftkit.io.Checkpoint`.

    Attributes:
        path: the adapter folder. format: ``"lora"``. config: the base's config.
        tensors: the base's tensors (same names, shapes and dtypes: reads come back in float32
            where the adapter changes a tensor).
        adapter: the parsed :class:`AdapterConfig`. targets: base tensor name → :class:`LoraTarget`.
        stored: base tensor name → the adapter key of a whole tensor that replaces the base's
            (PEFT saves embedding layers this way), e.g. ``"…embed_tokens.base_layer.weight"``.
    """

    format = "lora"

    def __init__(self, path: Path, adapter: AdapterConfig, factors: Checkpoint, base: Any) -> None:
        self.path, self.adapter, self._factors, self._base = path, adapter, factors, base
        self.targets, self.stored = _index(path, adapter, factors.tensors, base.tensors)
        self.metadata: dict[str, str] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str], base: Any) -> LoraExpert:
        """Open an adapter folder over an opened ``base`` checkpoint (headers only).

        Raises:
            CheckpointError: model weights beside the adapter, no adapter file, an unsupported option, a key that
                is no LoRA factor, a module the base lacks, or shapes that do not fit the base.
        """
        path = Path(path)
        weights = [n for n in (ST_SINGLE, ST_INDEX, BIN_SINGLE, BIN_INDEX) if (path / n).is_file()]
        if weights:
            raise CheckpointError(
                f"{path}: holds both a PEFT adapter ({ADAPTER_CONFIG}) and model weights ({weights[0]}), so it is "
                "unclear which to merge. Move the adapter files (adapter_*) or the model into a folder of its own."
            )
        config = read_adapter_config(path)
        file = next((path / name for name in ADAPTER_FILES if (path / name).is_file()), None)
        if file is None:
            raise CheckpointError(
                f"{path}: has {ADAPTER_CONFIG} but no {' or '.join(ADAPTER_FILES)}; the adapter's weights are "
                "missing. Save it again with `save_pretrained`."
            )
        factors = Checkpoint.open(file)
        try:
            return cls(path, config, factors, base)
        except BaseException:
            factors.close()
            raise

    @property
    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._base.tensors

    @property
    def config(self) -> dict[str, Any] | None:
        return self._base.config

    @property
    def quantization(self) -> str | None:
        return None

    def delta(self, name: str) -> torch.Tensor:
        """ΔW of base tensor ``name`` (a key of :attr:`targets`), float32, the tensor's shape."""
        return self._plus_delta(None, name)

    def _plus_delta(self, weight: torch.Tensor | None, name: str) -> torch.Tensor:
        """``weight + ΔW`` in one fused ``addmm`` (no ΔW-sized temporary); ΔW alone for None."""
        target = self.targets[name]
        a = self._factors.read(target.a_key).float()  # (r, in)
        b = self._factors.read(target.b_key).float()  # (out, r)
        left, right = (a.T, b.T) if target.transpose else (b, a)  # (B A)ᵀ = Aᵀ Bᵀ
        if weight is None:
            return (left @ right) * target.scale
        return torch.addmm(weight, left, right, alpha=target.scale)

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """The expert's tensor ``name``: the base's (or the one the adapter stores), plus ΔW (in
        float32) where the adapter has one."""
        if name not in self.targets and name not in self.stored:
            return self._base.read(name) if out is None else self._base.read(name, out=out)
        own = self._factors.read(self.stored[name]) if name in self.stored else self._base_tensor(name)
        merged = self._plus_delta(own.float(), name) if name in self.targets else own
        return merged if out is None else out.copy_(merged)

    def _base_tensor(self, name: str) -> torch.Tensor:
        """The base's tensor, mapped without a copy where the base can (it is only read here)."""
        mapped = getattr(self._base, "read_mapped", None)
        return mapped(name) if mapped is not None else self._base.read(name)

    def read_mapped(self, name: str) -> torch.Tensor:
        """Like :meth:`read`; tensors the adapter does not touch are mapped from the base without a copy."""
        return self.read(name) if name in self.targets or name in self.stored else self._base_tensor(name)

    def describe(self) -> str:
        """One line for ``graft validate``: the rank(s), scale(s) and target modules."""
        ranks = sorted({t.rank for t in self.targets.values()})
        scales = sorted({round(t.scale, 6) for t in self.targets.values()})
        kinds = sorted({t.module.rsplit(".", 1)[-1] for t in self.targets.values()})
        rank = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}–{ranks[-1]} (rank_pattern)"
        scale = ", ".join(f"{s:g}" for s in scales) + (" (rsLoRA)" if self.adapter.use_rslora else "")
        stored = f", {len(self.stored)} stored whole ({', '.join(self.stored)})" if self.stored else ""
        return (
            f"LoRA adapter {self.path}: rank {rank}, scale {scale}, {len(self.targets)} tensors "
            f"({', '.join(kinds)}){stored}; every other tensor is the base's"
        )

    def close(self) -> None:
        """Close the adapter file (the base is its opener's to close)."""
        self._factors.close()

    def __enter__(self) -> LoraExpert:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LoraExpert({str(self.path)!r}, targets={len(self.targets)})"


def _index(
    path: Path, config: AdapterConfig, factors: Mapping[str, TensorInfo], base: Mapping[str, Any]
) -> tuple[dict[str, LoraTarget], dict[str, str]]:
    """Pair each module's A and B and name the base tensor they change; also the whole tensors the
    adapter stores (PEFT's ``save_embedding_layers``), which replace the base's. Shapes are checked."""
    pairs: dict[str, dict[str, str]] = {}
    stored: dict[str, str] = {}
    for key in factors:
        suffix = next((s for s in _FACTORS if key.endswith(s)), None)
        if suffix is not None:
            module = key[: -len(suffix)].removeprefix(PEFT_PREFIX)
            pairs.setdefault(module, {})[_FACTORS[suffix]] = key
            continue
        name = key.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
        if name not in base or "lora_" in key:
            raise CheckpointError(
                f"{path}: holds tensor {key!r}, which is neither a LoRA factor (lora_A, lora_B, lora_embedding_A/B) "
                "nor a tensor of the base"
                + (" (it is DoRA's magnitude vector)" if "lora_magnitude_vector" in key else "")
                + "; graftkit takes an adapter as base + scale·B·A only. Merge it with PEFT's "
                "`merge_and_unload()` and list the merged folder in the recipe instead."
            )
        _check_stored(path, key, factors[key].shape, base[name].shape)
        stored[name] = key
    targets = {}
    for module, keys in sorted(pairs.items()):
        if set(keys) != {"A", "B"}:
            raise CheckpointError(f"{path}: module {module!r} has only lora_{''.join(keys)}; save the adapter again.")
        embedding = "lora_embedding" in keys["A"]
        transpose = embedding or config.fan_in_fan_out
        target = LoraTarget(module, keys["A"], keys["B"], config.rank(module), config.scale(module), transpose)
        name = f"{module}.weight"
        _check_shapes(path, target, factors, base.get(name), name)
        targets[name] = target
    if not targets:
        raise CheckpointError(f"{path}: the adapter holds no LoRA factors; save it again with `save_pretrained`.")
    return targets, stored


def _check_stored(path: Path, key: str, shape: tuple[int, ...], base_shape: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(base_shape):
        raise CheckpointError(
            f"{path}: stores {key!r} with shape {list(shape)}, but the base's is {list(base_shape)} (a resized "
            "vocabulary?). graftkit merges models of one vocabulary: use the base the adapter was trained on."
        )


def _check_shapes(path: Path, t: LoraTarget, factors: Mapping[str, TensorInfo], meta: Any, name: str) -> None:
    a, b = factors[t.a_key].shape, factors[t.b_key].shape
    if meta is None:
        raise CheckpointError(
            f"{path}: adapts module {t.module!r}, but the base has no tensor `{name}`. Use the base model the "
            "adapter was trained on as `base_model`."
        )
    if len(a) != 2 or len(b) != 2:
        raise CheckpointError(
            f"{path}: module {t.module!r} has {len(a)}-D LoRA factors (a convolution); graftkit reads adapters "
            "of linear and embedding layers only. Merge it with PEFT's `merge_and_unload()` first."
        )
    out_in = (b[0], a[1]) if not t.transpose else (a[1], b[0])
    if a[0] != t.rank or b[1] != t.rank or tuple(meta.shape) != out_in:
        raise CheckpointError(
            f"{path}: module {t.module!r} has lora_A {list(a)} and lora_B {list(b)}, which do not make a rank-"
            f"{t.rank} update (r, rank_pattern) of the base's `{name}` {list(meta.shape)}. Use the base "
            f"model the adapter was trained on, and its own {ADAPTER_CONFIG}."
        )
