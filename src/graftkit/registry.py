"""One registry per kind of named thing (merge methods, tasks, study units).

Entries are added by a decorator and looked up by name; an unknown name fails with the list of
valid names and the closest match.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from graftkit.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → entry mapping with helpful errors.

    Args:
        kind: what the entries are, used in error messages ("merge method", "task").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(entry: T) -> T:
            return self.add(name, entry)

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._entries)) from None

    def closest(self, name: str) -> str | None:
        match = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
        return match[0] if match else None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
