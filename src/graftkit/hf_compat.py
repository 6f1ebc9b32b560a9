"""A causal LM's key-value cache under either of its names.

transformers 5 renamed the cache of a causal LM, argument and output field alike, from ``past_key_values``
to ``cache`` (the old argument warns, and goes in 5.40). graftkit supports ``transformers>=4.40``, so it
passes and reads the cache under whichever name the model and its output have. Importing this module
imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

NEW, OLD = "cache", "past_key_values"


def cache_argument(model: Any) -> str:
    """The keyword ``model``'s forward takes its cache by: ``"cache"`` or ``"past_key_values"``.

    A wrapper whose forward names neither (a PEFT model passes ``**kwargs`` on) is judged by the model it
    wraps (``get_base_model()``); anything else by the old name (accepted by every version before 5.40).
    """
    params = inspect.signature(model.forward).parameters
    if NEW in params:
        return NEW
    if OLD not in params and hasattr(model, "get_base_model"):
        return cache_argument(model.get_base_model())
    return OLD


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` to splat into ``model(...)``, under the name its forward takes."""
    return {cache_argument(model): cache}


def cache_field(output_type: type) -> str:
    """The field an output class (``CausalLMOutputWithPast``, …) keeps the cache in."""
    names = {f.name for f in dataclasses.fields(output_type)} if dataclasses.is_dataclass(output_type) else set()
    return NEW if NEW in names else OLD


def output_cache(output: Any) -> Any:
    """The cache a model's output carries (``None`` when it was called without ``use_cache``)."""
    return getattr(output, cache_field(type(output)))
