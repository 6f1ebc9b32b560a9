"""graftkit: build one model out of many.

Merge experts that share a base in weight space (:func:`merge`, :func:`merge_state_dicts`),
compose frozen models with CALM bridges (:mod:`graftkit.compose`), and measure the result
(:mod:`graftkit.evaluate`, :mod:`graftkit.study`).

Heavy modules (transformers, peft, matplotlib) are imported only where used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Ask torch's CPU allocator for transparent huge pages on large tensors: a merge allocates
# many tensors of hundreds of MB, and page-faulting them 4 KiB at a time costs 2-3x the math.
# Read by torch when it allocates, so it must be set before torch is imported; users can
# opt out with THP_MEM_ALLOC_ENABLE=0.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
__all__ = ["merge", "merge_state_dicts", "__version__"]

if TYPE_CHECKING:
    from graftkit.merge.api import merge_state_dicts


from graftkit import merge  # noqa: E402  (the package is callable: graftkit.merge(recipe, out))


def __getattr__(name: str) -> Any:
    if name == "merge_state_dicts":
        from graftkit.merge.api import merge_state_dicts

        return merge_state_dicts
    raise AttributeError(f"module 'graftkit' has no attribute {name!r}")
