"""Recognise quantized checkpoints from their config and tensor names, without reading weights.

Merging packed integer weights as if they were floats silently produces garbage, so callers check
this before planning a merge. A GGUF input is not refused: :mod:`graftkit.io.gguf_reader`
dequantizes each tensor to float32 on read, and its config carries no ``quantization_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from graftkit.io.tensor_info import TensorInfo

_METHOD_NAMES = {
    "gptq": "GPTQ",
    "awq": "AWQ",
    "bitsandbytes": "bitsandbytes",
    "bitsandbytes_4bit": "bitsandbytes",
    "bitsandbytes_8bit": "bitsandbytes",
    "fp8": "FP8",
}
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
# Suffixes bitsandbytes serialises next to packed weights (4-bit quant state, 8-bit row scales).
_BNB_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".SCB")


def detect_quantization(config: Mapping[str, Any] | None, tensors: Mapping[str, TensorInfo]) -> str | None:
    """Name the quantization scheme of a checkpoint, or None for plain weights.

    Checks, in order: ``config["quantization_config"]`` (its ``quant_method``, or the
    ``load_in_4bit``/``load_in_8bit`` flags), then tensor names and dtypes: ``qweight``/``qzeros``
    (``g_idx`` as well → GPTQ, else AWQ), bitsandbytes quant-state tensors, and float8 dtypes.

    Args:
        config: the checkpoint's ``config.json`` contents, or None.
        tensors: name → :class:`TensorInfo` from the checkpoint headers.

    Returns:
        ``"GPTQ"``, ``"AWQ"``, ``"bitsandbytes"``, ``"FP8"``, another ``quant_method`` string from the
        config as written, or None.
    """
    qc = (config or {}).get("quantization_config")
    if isinstance(qc, Mapping) and qc:
        method = str(qc.get("quant_method", "")).lower()
        if method:
            return _METHOD_NAMES.get(method, method)
        if qc.get("load_in_4bit") or qc.get("load_in_8bit"):
            return "bitsandbytes"
        return "unknown"
    leaves = {name.rsplit(".", 1)[-1] for name in tensors}
    if "qweight" in leaves or "qzeros" in leaves:
        return "GPTQ" if "g_idx" in leaves else "AWQ"
    if any(name.endswith(_BNB_SUFFIXES) or ".quant_state." in name for name in tensors):
        return "bitsandbytes"
    if any(info.dtype in _FP8 for info in tensors.values()) or "weight_scale_inv" in leaves:
        return "FP8"
    return None
