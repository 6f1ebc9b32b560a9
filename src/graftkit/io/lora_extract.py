"""LoRA out: factorise a model's difference from its base into a PEFT LoRA adapter folder.

For every linear layer's weight, ``Δ = W_model − W_base`` (out, in) is factorised by truncated SVD:
``Δ ≈ B A`` with ``B = U_r √S_r`` (out, r) and ``A = √S_r V_rᵀ`` (r, in), the best rank-r
approximation in Frobenius norm (Eckart–Young). ``lora_alpha`` equals each module's rank, so
PEFT's scale is 1 and ``W_base + B A`` is the reconstruction. Tensors that are not linear weights
(norms, biases, embeddings) have no LoRA form here: a changed one is listed as skipped, with how
much it changed. Inputs are read one tensor at a time; the adapter is built in a temporary folder
beside the output and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import CheckpointError, GraftError
from graftkit.io.checkpoint import Checkpoint
from graftkit.io.lora import PEFT_PREFIX
from graftkit.io.lora_config import ADAPTER_CONFIG
from graftkit.io.output import atomic_output

REPORT_FILE = "lora_extract.json"


@dataclass(frozen=True)
class Factors:
    """``Δ ≈ b @ a``: ``a`` (r, in), ``b`` (out, r), and ``rel_error = ‖Δ − b a‖_F / ‖Δ‖_F``."""

    a: torch.Tensor
    b: torch.Tensor
    rel_error: float


def factorize(delta: torch.Tensor, rank: int) -> Factors:
    """The best rank-``min(rank, out, in)`` factors of ``delta`` (out, in), computed in float32.

    The singular values are split evenly (√S on each side), so A and B have equal norms.
    A zero ``delta`` has relative error 0.
    """
    delta = delta.float()
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)  # (out, k), (k,), (k, in)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    b = u[:, :r] * root  # (out, r)
    a = root[:, None] * vh[:r]  # (r, in)
    norm = torch.linalg.matrix_norm(delta)
    error = torch.linalg.matrix_norm(delta - b @ a) / norm if norm > 0 else torch.zeros(())
    return Factors(a.contiguous(), b.contiguous(), float(error))


@dataclass(frozen=True)
class ExtractedTensor:
    """One factorised weight: its name, (out, in) shape, rank and relative reconstruction error."""

    name: str
    shape: tuple[int, ...]
    rank: int
    rel_error: float


@dataclass
class ExtractReport:
    """What :func:`extract_lora` wrote (also saved as ``lora_extract.json`` in the adapter folder).

    Attributes:
        skipped: changed tensors without a LoRA form, each ``{name, reason, rel_change}`` with
            ``rel_change = ‖Δ‖_F / ‖W_base‖_F``. unchanged: tensors equal in both models.
    """

    model: str
    base: str
    rank: int
    tensors: list[ExtractedTensor] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def linear_weights(config: dict[str, Any] | None, where: Path) -> dict[str, bool]:
    """Weight name → ``fan_in_fan_out`` (stored (in, out): GPT-2's ``Conv1D``) for every linear
    layer of the architecture ``config`` describes (built on the meta device: no memory)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    if not config or "model_type" not in config:
        raise CheckpointError(f"{where}: has no config.json with a model_type, so its linear layers are unknown.")
    hf_config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(hf_config)
        except ValueError:
            model = AutoModel.from_config(hf_config)
    kinds = {"Linear": False, "Conv1D": True}
    return {f"{n}.weight": kinds[type(m).__name__] for n, m in model.named_modules() if type(m).__name__ in kinds}


def extract_lora(
    model: str | os.PathLike[str],
    base: str | os.PathLike[str],
    rank: int,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    device: str = "cpu",
    copy_in: Sequence[Path] = (),
    on_tensor: Callable[[int, int], None] | None = None,
) -> ExtractReport:
    """Write ``model − base`` as a PEFT LoRA adapter folder of rank ``rank`` at ``out``.

    Args:
        model, base: checkpoints of one architecture (folders or files ``Checkpoint.open`` reads).
        rank: the adapter's ``r``; a module whose smaller side is below it gets that side's rank
            (``rank_pattern``, with ``alpha_pattern`` keeping its scale at 1).
        out: the adapter folder: ``adapter_config.json``, ``adapter_model.safetensors`` (PEFT key
            names, float32) and ``lora_extract.json`` (the :class:`ExtractReport`).
        overwrite: replace an existing ``out``. device: where the SVDs run.
        copy_in: files to copy into the adapter folder too (e.g. the recipe of a merge).
        on_tensor: called with (tensor number, tensors in all) as each tensor is handled (progress).

    Raises:
        GraftError: rank below 1, or no linear weight differs between the models.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    if rank < 1:
        raise GraftError(f"--rank must be at least 1, got {rank}.")
    report = ExtractReport(str(model), str(base), rank)
    with atomic_output(out, overwrite=overwrite) as tmp, Checkpoint.open(model) as m, Checkpoint.open(base) as b:
        linear = linear_weights(b.config, Path(base))
        factors, fan_in_fan_out = _factorize_all(m, b, linear, rank, device, report, on_tensor)
        if not report.tensors:
            raise GraftError(
                f"No linear weight of {model} differs from {base}, so there is nothing to extract"
                + (
                    f" ({len(report.skipped)} other tensors changed: {report.skipped[0]['name']} …)."
                    if report.skipped
                    else "."
                )
            )
        from safetensors.torch import save_file

        save_file(factors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = adapter_config(report, rank, fan_in_fan_out, str(base), b.config)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        (tmp / REPORT_FILE).write_text(report.to_json(), encoding="utf-8")
        for path in copy_in:
            shutil.copy2(path, tmp / Path(path).name)
    return report


def read_report(folder: str | os.PathLike[str]) -> ExtractReport:
    """The :class:`ExtractReport` an adapter folder written by :func:`extract_lora` holds."""
    data = json.loads((Path(folder) / REPORT_FILE).read_text(encoding="utf-8"))
    tensors = [ExtractedTensor(t["name"], tuple(t["shape"]), t["rank"], t["rel_error"]) for t in data.pop("tensors")]
    return ExtractReport(**data, tensors=tensors)


def _factorize_all(m, b, linear, rank, device, report, on_tensor) -> tuple[dict[str, torch.Tensor], bool]:
    """Factorise every changed linear weight (one tensor in memory at a time); fill ``report``."""
    factors: dict[str, torch.Tensor] = {}
    layout = None  # fan_in_fan_out is one flag per adapter: the first changed layer's decides
    for done, (name, info) in enumerate(m.tensors.items(), 1):
        if on_tensor is not None:
            on_tensor(done, len(m.tensors))
        if not info.dtype.is_floating_point or name not in b.tensors or b.tensors[name].shape != info.shape:
            continue
        base_w = b.read(name).float()
        delta = m.read(name).float() - base_w
        if not delta.any():
            report.unchanged += 1
            continue
        layout = linear.get(name) if layout is None else layout
        if name not in linear or linear[name] != layout:
            report.skipped.append(_skip(name, delta, base_w, linear))
            continue
        found = factorize((delta.T if layout else delta).to(device), rank)  # (out, in)
        module = name.removesuffix(".weight")
        factors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = found.a.cpu()
        factors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = found.b.cpu()
        shape = (found.b.shape[0], found.a.shape[1])
        report.tensors.append(ExtractedTensor(name, shape, found.a.shape[0], found.rel_error))
    return factors, bool(layout)


def _skip(name: str, delta: torch.Tensor, base_w: torch.Tensor, linear: dict[str, bool]) -> dict[str, Any]:
    if name in linear:
        reason = "a Conv1D weight among nn.Linear ones (fan_in_fan_out is one flag per adapter)"
    else:
        reason = f"{delta.dim()}-D: a norm or bias" if delta.dim() < 2 else "not an nn.Linear weight (an embedding?)"
    norm = float(torch.linalg.vector_norm(base_w))
    rel = float(torch.linalg.vector_norm(delta)) / norm if norm > 0 else float("inf")
    return {"name": name, "reason": reason, "rel_change": rel}


def adapter_config(
    report: ExtractReport, rank: int, fan_in_fan_out: bool, base: str, config: dict[str, Any] | None
) -> dict[str, Any]:
    """A PEFT ``adapter_config.json`` for the extracted factors: scale 1 in every module."""
    modules = [t.name.removesuffix(".weight") for t in report.tensors]
    smaller = {t.name.removesuffix(".weight"): t.rank for t in report.tensors if t.rank != rank}
    causal = any(a.endswith("ForCausalLM") for a in (config or {}).get("architectures") or [])
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM" if causal else None,
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": smaller,
        "alpha_pattern": {k: float(v) for k, v in smaller.items()},
        "target_modules": modules,
        "fan_in_fan_out": fan_in_fan_out,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
