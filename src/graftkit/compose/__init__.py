"""CALM composition: a frozen anchor LM reads frozen augment LMs through a trained bridge.

Bansal et al., "LLM Augmented LLMs: Expanding Capabilities through Composition", ICLR 2024.
"""

from __future__ import annotations

from graftkit.compose.bridge import CrossAttentionConnection, allowed_positions
from graftkit.compose.discovery import DecoderStack, NormSpec, discover
from graftkit.compose.files import fingerprint, load_bridge, read_manifest, save_bridge
from graftkit.compose.generate import generate
from graftkit.compose.model import ComposedCache, ComposedModel, compose
from graftkit.compose.params import BridgeParamCount, bridge_param_count
from graftkit.compose.wiring import Connection, default_connections, validate_connections

__all__ = [
    "BridgeParamCount",
    "ComposedCache",
    "ComposedModel",
    "Connection",
    "CrossAttentionConnection",
    "DecoderStack",
    "NormSpec",
    "allowed_positions",
    "bridge_param_count",
    "compose",
    "default_connections",
    "discover",
    "fingerprint",
    "generate",
    "load_bridge",
    "read_manifest",
    "save_bridge",
    "validate_connections",
]
