"""Forward hooks on decoder blocks, registered only for the duration of a ``with`` block.

Each block returns a tensor (transformers ≥ 5) or a tuple whose first item is the hidden states
(older versions); both forms are handled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn


def _hidden(output: object) -> Tensor:
    return output if isinstance(output, Tensor) else output[0]  # type: ignore[index]


@contextmanager
def capture_outputs(layers: nn.ModuleList, indices: set[int]) -> Iterator[dict[int, Tensor]]:
    """Yield a dict that fills with ``{i: output of block i}`` (B, T, D) while the block runs."""
    captured: dict[int, Tensor] = {}
    handles = []
    for i in sorted(indices):

        def hook(_mod: nn.Module, _args: object, output: object, i: int = i) -> None:
            captured[i] = _hidden(output)

        handles.append(layers[i].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@contextmanager
def rewrite_outputs(layers: nn.ModuleList, rewrites: Mapping[int, Callable[[Tensor], Tensor]]) -> Iterator[None]:
    """Replace the hidden states leaving block ``j`` by ``rewrites[j](hidden)`` inside the block."""
    handles = []
    for j, fn in rewrites.items():

        def hook(_mod: nn.Module, _args: object, output: object, fn: Callable = fn) -> object:
            if isinstance(output, Tensor):
                return fn(output)
            return (fn(output[0]), *output[1:])  # type: ignore[index]

        handles.append(layers[j].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
