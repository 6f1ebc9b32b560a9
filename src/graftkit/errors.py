"""Errors graftkit raises on purpose.

Every :class:`GraftError` is a user-facing message: one paragraph naming the file, tensor or
field and what to do. The CLI prints it without a traceback and exits with code 2.
"""

from __future__ import annotations

import difflib


class GraftError(Exception):
    """Base of all user-facing errors (bad input, not bugs)."""

    exit_code = 2


class RecipeError(GraftError):
    """A recipe is malformed or inconsistent with the checkpoints it names."""


class CheckpointError(GraftError):
    """A checkpoint folder or file cannot be read as asked."""


class OutputExistsError(GraftError):
    """The output path exists and ``overwrite`` was not given."""


class TensorValueError(GraftError):
    """A tensor holds NaN/Inf or another value that would silently corrupt a merge."""


class UnknownNameError(GraftError, KeyError):
    """A name that is not in a registry."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        msg = f"Unknown {kind} {name!r}.{hint} Valid names: {', '.join(sorted(valid))}."
        super().__init__(msg)
        self.kind, self.name, self.valid = kind, name, valid

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
