"""CALM composition: a frozen anchor LM reads frozen augment LMs through a trained bridge.

Bansal et al., "LLM Augmented LLMs: Expanding Capabilities through Composition", ICLR 2024.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names → defining module, imported on first use so `graft --help` stays fast.
_EXPORTS = {
    "BridgeParamCount": "graftkit.compose.params",
    "ComposedCache": "graftkit.compose.model",
    "ComposedModel": "graftkit.compose.model",
    "Connection": "graftkit.compose.wiring",
    "CrossAttentionConnection": "graftkit.compose.bridge",
    "DecoderStack": "graftkit.compose.discovery",
    "NormSpec": "graftkit.compose.discovery",
    "allowed_positions": "graftkit.compose.bridge",
    "bridge_param_count": "graftkit.compose.params",
    "compose": "graftkit.compose.model",
    "default_connections": "graftkit.compose.wiring",
    "discover": "graftkit.compose.discovery",
    "fingerprint": "graftkit.compose.files",
    "generate": "graftkit.compose.generate",
    "load_bridge": "graftkit.compose.files",
    "read_manifest": "graftkit.compose.files",
    "save_bridge": "graftkit.compose.files",
    "validate_connections": "graftkit.compose.wiring",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'graftkit.compose' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
