"""Recipes, plans and the streaming executor (no tensor math here: that is :mod:`graftkit.methods`).

``graftkit.merge`` is both this package and the public function :func:`graftkit.merge.api.merge`:
the package module is callable, so ``graftkit.merge("recipe.yaml", "out/")`` works whether or not
the package was imported first.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from graftkit.merge.api import merge

        return merge(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
