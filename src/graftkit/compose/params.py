"""Exact size of a bridge Θ_C, absolute and relative to the anchor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graftkit.compose.model import ComposedModel


@dataclass(frozen=True)
class BridgeParamCount:
    """Parameter counts: ``bridge`` (Θ_C), ``per_augment`` (its split) and ``anchor`` (unique tensors)."""

    bridge: int
    per_augment: tuple[int, ...]
    anchor: int

    @property
    def percent_of_anchor(self) -> float:
        return 100.0 * self.bridge / self.anchor

    def __str__(self) -> str:
        pct = self.percent_of_anchor
        return f"{self.bridge:,} bridge parameters ({pct:.2f}% of the anchor's {self.anchor:,})"


def bridge_param_count(model: ComposedModel) -> BridgeParamCount:
    """Exact count of Θ_C. Per connection: ``D_A·D_B + D_B`` (f_proj) ``+ 4·D_B²`` (q, kv, o) plus
    two norms (``D_B`` each for RMSNorm, ``2·D_B`` for LayerNorm)."""
    per_augment = tuple(sum(p.numel() for p in bridge.parameters()) for bridge in model.bridge)
    anchor = sum(p.numel() for p in model.anchor.parameters())  # parameters() counts tied weights once
    return BridgeParamCount(sum(per_augment), per_augment, anchor)
