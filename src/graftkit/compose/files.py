"""Bridge folders: ``bridge.safetensors`` (Θ_C only) and ``bridge.json`` (wiring, sizes, references).

A reference names a model by path (when it was loaded from a folder) and by a fingerprint: a
SHA-256 over its architecture sizes and, per tensor, the name, shape and 1,024 evenly spaced values
rounded to bfloat16 (so the same checkpoint loaded as float32 or bfloat16 matches, while a model of
the same shape with other weights does not).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from graftkit.compose.discovery import DecoderStack
from graftkit.compose.model import ComposedModel, compose
from graftkit.compose.params import bridge_param_count
from graftkit.compose.wiring import Connection
from graftkit.errors import CheckpointError, GraftError, OutputExistsError

FORMAT = "graftkit.calm-bridge/1"
WEIGHTS, MANIFEST = "bridge.safetensors", "bridge.json"
_ARCH = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def sample_positions(numel: int, count: int) -> torch.Tensor:
    """``min(count, numel)`` evenly spaced indices into a flat tensor of ``numel`` entries, first and last
    included, in exact integer arithmetic (a float32 ``linspace`` rounds past the end beyond 2**24 entries)."""
    n = min(count, numel)
    return torch.arange(n, dtype=torch.int64) * max(numel - 1, 0) // max(n - 1, 1)


def fingerprint(model: nn.Module) -> str:
    """A content fingerprint of a model's weights and sizes (hex SHA-256)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({k: getattr(model.config, k, None) for k in _ARCH}, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        idx = sample_positions(flat.numel(), 1024).to(flat.device)
        sample = flat[idx]
        if sample.is_floating_point():
            sample = sample.to(torch.bfloat16)
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def model_path(model: nn.Module) -> str | None:
    """The folder a Hugging Face model was loaded from, when it was loaded from one."""
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return str(Path(name).resolve()) if name and Path(name).is_dir() else None


def _describe(model: nn.Module, stack: DecoderStack, path: str | None) -> dict[str, Any]:
    return {
        "path": path if path is not None else model_path(model),
        "fingerprint": fingerprint(model),
        "model_type": getattr(model.config, "model_type", None),
        "hidden_size": stack.hidden_size,
        "num_layers": stack.num_layers,
        "num_heads": stack.num_heads,
        "vocab_size": stack.vocab_size,
        "norm": {"kind": stack.norm.kind, "eps": stack.norm.eps},
    }


def save_bridge(
    model: ComposedModel,
    path: str | Path,
    *,
    anchor_path: str | None = None,
    augment_paths: Sequence[str | None] | None = None,
    overwrite: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``bridge.safetensors`` and ``bridge.json`` into folder ``path``.

    Args:
        anchor_path, augment_paths: checkpoint folders to reference; default to where the models were
            loaded from (``config._name_or_path``), or ``null`` for models built in memory.
        overwrite: replace an existing bridge in ``path``.
        extra: more JSON-able fields for the manifest (e.g. the training step).
    """
    out = Path(path)
    if (out / WEIGHTS).exists() and not overwrite:
        raise OutputExistsError(f"{out / WEIGHTS} exists; pass overwrite=True or choose another folder.")
    out.mkdir(parents=True, exist_ok=True)
    aug_paths = list(augment_paths) if augment_paths is not None else [None] * len(model.augments)
    count = bridge_param_count(model)
    manifest = {
        "format": FORMAT,
        "anchor": _describe(model.anchor, model.anchor_stack, anchor_path),
        "augments": [
            {**_describe(m, st, p), "connections": [c.model_dump() for c in conns]}
            for m, st, p, conns in zip(model.augments, model.augment_stacks, aug_paths, model.connections, strict=True)
        ],
        "parameters": {
            "bridge": count.bridge,
            "anchor": count.anchor,
            "percent_of_anchor": count.percent_of_anchor,
        },
        **(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed ``bridge.json`` of a bridge folder."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist; a bridge folder holds {WEIGHTS} and {MANIFEST}.")
    manifest = json.loads(file.read_text())
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{file} has format {manifest.get('format')!r}, expected {FORMAT!r}.")
    return manifest


def _resolve(given: nn.Module | str | Path | None, ref: dict[str, Any], role: str, dtype: Any) -> nn.Module:
    if isinstance(given, nn.Module):
        return given
    path = given if given is not None else ref.get("path")
    if path is None:
        raise GraftError(f"The bridge does not record where its {role} came from; pass {role}= explicitly.")
    if not Path(path).is_dir():
        raise CheckpointError(f"The {role} checkpoint folder {path} does not exist; pass {role}= explicitly.")
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)


def load_bridge(
    path: str | Path,
    anchor: nn.Module | str | Path | None = None,
    augments: Sequence[nn.Module | str | Path | None] | nn.Module | str | Path | None = None,
    *,
    verify: bool = True,
    dtype: Any = None,
) -> ComposedModel:
    """Rebuild a composed model from a bridge folder.

    Args:
        path: the bridge folder.
        anchor, augments: models or checkpoint folders; ``None`` loads the folders ``bridge.json`` names.
        verify: check every model's fingerprint against ``bridge.json``.
        dtype: dtype for models loaded from folders (e.g. ``torch.bfloat16``).

    Raises:
        GraftError: a model does not match the one the bridge was trained with, or cannot be found.
    """
    manifest = read_manifest(path)
    refs = manifest["augments"]
    if augments is None or isinstance(augments, (nn.Module, str, Path)):
        given = [augments] * len(refs) if augments is None else [augments]
    else:
        given = list(augments)
    if len(given) != len(refs):
        raise GraftError(f"The bridge at {path} joins {len(refs)} augments; {len(given)} were given.")
    anchor_model = _resolve(anchor, manifest["anchor"], "anchor", dtype)
    aug_models = [_resolve(g, r, f"augments[{i}]", dtype) for i, (g, r) in enumerate(zip(given, refs, strict=True))]
    if verify:
        for model, ref, role in [(anchor_model, manifest["anchor"], "anchor")] + [
            (m, r, f"augment {i}") for i, (m, r) in enumerate(zip(aug_models, refs, strict=True))
        ]:
            found = fingerprint(model)
            if found != ref["fingerprint"]:
                raise GraftError(
                    f"The {role} does not match the one this bridge was trained with (from "
                    f"{ref.get('path') or 'an in-memory model'}): fingerprint {found[:12]}… != "
                    f"{ref['fingerprint'][:12]}…. Load that checkpoint, or pass verify=False to skip "
                    "the check."
                )
    connections = [[Connection.model_validate(c) for c in r["connections"]] for r in refs]
    model = compose(anchor_model, aug_models, connections)
    state = load_file(str(Path(path) / WEIGHTS))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{Path(path) / WEIGHTS} does not fit the bridge in {MANIFEST}: {err}") from None
    return model
