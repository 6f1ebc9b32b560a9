"""Which augment layer feeds which anchor layer: connections as validated data.

Layers are counted from 0 and name the *output* of that decoder block (Bansal et al., 2024,
"LLM Augmented LLMs", arXiv 2401.02412, §3).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, NonNegativeInt

from graftkit.errors import GraftError


class Connection(BaseModel):
    """Augment layer ``augment_layer`` feeds a cross-attention added after anchor layer ``anchor_layer``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    anchor_layer: NonNegativeInt
    augment_layer: NonNegativeInt


def default_connections(anchor_layers: int, augment_layers: int) -> list[Connection]:
    """The paper's wiring: every 4th augment layer, paired with evenly spaced anchor layers.

    ``i_k = 4(k+1) - 1`` and ``j_k = floor((k+1) * L_B / n) - 1`` for ``k = 0 … n-1``, ``n = L_A // 4``.

    Raises:
        GraftError: the augment has fewer than 4 layers, or more connections than the anchor has layers.
    """
    n = augment_layers // 4
    if n == 0:
        raise GraftError(
            f"The default wiring joins every 4th augment layer, but the augment has {augment_layers} "
            "layers; pass connections=[Connection(anchor_layer=..., augment_layer=...)] explicitly."
        )
    if n > anchor_layers:
        raise GraftError(
            f"The default wiring needs {n} anchor layers (augment has {augment_layers} layers) but the "
            f"anchor has {anchor_layers}; pass connections explicitly."
        )
    return [Connection(anchor_layer=(k + 1) * anchor_layers // n - 1, augment_layer=4 * (k + 1) - 1) for k in range(n)]


def validate_connections(
    connections: Sequence[Connection], anchor_layers: int, augment_layers: int, *, augment: int = 0
) -> list[Connection]:
    """Check connections against both models' layer counts; return them as a list.

    Raises:
        GraftError: a layer index is out of range, a connection repeats, or the list is empty.
    """
    conns = [c if isinstance(c, Connection) else Connection.model_validate(c) for c in connections]
    if not conns:
        raise GraftError(f"augment {augment}: the connection list is empty; give at least one connection.")
    for c in conns:
        if c.anchor_layer >= anchor_layers:
            raise GraftError(
                f"augment {augment}: {c!r} names anchor layer {c.anchor_layer}, but the anchor has "
                f"{anchor_layers} layers (valid: 0…{anchor_layers - 1})."
            )
        if c.augment_layer >= augment_layers:
            raise GraftError(
                f"augment {augment}: {c!r} names augment layer {c.augment_layer}, but the augment has "
                f"{augment_layers} layers (valid: 0…{augment_layers - 1})."
            )
    if len(set(conns)) != len(conns):
        raise GraftError(f"augment {augment}: a connection is listed twice in {conns!r}.")
    return conns
