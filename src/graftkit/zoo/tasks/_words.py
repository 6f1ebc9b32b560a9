"""Common English words of 3-8 letters, for the chat tasks a real BPE language model reads."""

from __future__ import annotations

WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        """
    apple bread chair table house garden window river mountain forest ocean island valley desert
    candle mirror pencil paper basket bottle button camera carpet castle circle cloud coffee cookie
    corner cotton country dinner doctor dragon dream engine family farmer finger flower friend
    future ghost glass grape guitar hammer harbor helmet honey horse hunter jacket jungle kettle
    kitchen ladder lemon letter lion market meadow metal monkey morning mother needle number orange
    palace parrot pepper pillow planet pocket potato puzzle rabbit rocket saddle salmon school
    shadow silver singer sister spider spring stone storm street summer sunset tiger ticket tomato
    tower travel tunnel turtle velvet violin wagon winter wizard yellow zebra anchor arrow badge
    barrel beach berry blanket bridge brush cabin canyon carrot cherry cliff clock coral crown
    diamond dolphin eagle feather fence field forest frost giant gold hill iron jewel kite lake
    lamp leaf magnet maple marble moon nest night oak owl panda pearl piano pine pirate pond
    queen rain rose ruby sail salt sand seed sheep ship shore snow sound star sugar swan thunder
    train tree valley wheel whale wind wolf wood yarn
    """.split()  # noqa: SIM905 (a word list reads better as text)
    )
)
