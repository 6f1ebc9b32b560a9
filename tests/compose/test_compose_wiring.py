from __future__ import annotations

import pytest
from pydantic import ValidationError

from graftkit.compose import Connection, default_connections, validate_connections
from graftkit.errors import GraftError


def test_default_wiring_matches_paper_formula():
    # L_A = 12 -> n = 3, i = 3, 7, 11; L_B = 6 -> j = 1, 3, 5.
    assert default_connections(anchor_layers=6, augment_layers=12) == [
        Connection(anchor_layer=1, augment_layer=3),
        Connection(anchor_layer=3, augment_layer=7),
        Connection(anchor_layer=5, augment_layer=11),
    ]
    # Rounded down: L_B = 5, n = 2 -> j = floor(2.5) - 1 = 1, 4.
    assert [c.anchor_layer for c in default_connections(5, 8)] == [1, 4]


def test_default_wiring_needs_four_augment_layers():
    with pytest.raises(GraftError, match="3 layers"):
        default_connections(4, 3)


def test_connection_is_frozen_and_non_negative():
    c = Connection(anchor_layer=1, augment_layer=2)
    with pytest.raises(ValidationError):
        c.anchor_layer = 3
    with pytest.raises(ValidationError):
        Connection(anchor_layer=-1, augment_layer=0)


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (Connection(anchor_layer=4, augment_layer=0), "anchor layer 4.*4 layers"),
        (Connection(anchor_layer=0, augment_layer=8), "augment layer 8.*8 layers"),
    ],
)
def test_validation_rejects_out_of_range_layers(conn, message):
    with pytest.raises(GraftError, match=message):
        validate_connections([conn], anchor_layers=4, augment_layers=8)


def test_validation_rejects_duplicates_and_empty():
    c = Connection(anchor_layer=0, augment_layer=0)
    with pytest.raises(GraftError, match="twice"):
        validate_connections([c, c], 4, 8)
    with pytest.raises(GraftError, match="empty"):
        validate_connections([], 4, 8)
    assert validate_connections([{"anchor_layer": 3, "augment_layer": 7}], 4, 8) == [
        Connection(anchor_layer=3, augment_layer=7)
    ]


def test_compose_rejects_out_of_range_layers(llama_anchor, gpt2_augment):
    from graftkit.compose import compose

    with pytest.raises(GraftError, match="anchor layer 9"):
        compose(llama_anchor, gpt2_augment, [Connection(anchor_layer=9, augment_layer=0)])
