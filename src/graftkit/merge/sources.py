"""Where the executor reads tensors from and writes them to.

A checkpoint on disk (:class:`graftkit.io.Checkpoint`) and an in-memory ``state_dict``
(:class:`StateDictSource`) both satisfy :class:`TensorSource`, so the same plan and executor serve
``graft merge`` and :func:`graftkit.merge_state_dicts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class TensorMeta(Protocol):
    shape: tuple[int, ...]
    dtype: torch.dtype


class TensorSource(Protocol):
    """Named tensors with metadata known before any data is read."""

    @property
    def tensors(self) -> Mapping[str, TensorMeta]: ...

    @property
    def config(self) -> dict[str, Any] | None: ...

    def read(self, name: str) -> torch.Tensor: ...


class TensorSink(Protocol):
    def write(self, name: str, tensor: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class _Meta:
    shape: tuple[int, ...]
    dtype: torch.dtype


class StateDictSource:
    """A ``state_dict`` (or an ``nn.Module``'s) seen as a :class:`TensorSource`."""

    def __init__(self, state: Mapping[str, torch.Tensor] | torch.nn.Module, label: str = "state_dict") -> None:
        if isinstance(state, torch.nn.Module):
            config = getattr(state, "config", None)
            self._config = config.to_dict() if hasattr(config, "to_dict") else None
            state = state.state_dict()
        else:
            self._config = None
        self._state = dict(state)
        self.label = label
        self._meta = {k: _Meta(tuple(v.shape), v.dtype) for k, v in self._state.items()}

    @property
    def tensors(self) -> Mapping[str, TensorMeta]:
        return self._meta

    @property
    def config(self) -> dict[str, Any] | None:
        return self._config

    def read(self, name: str) -> torch.Tensor:
        return self._state[name].detach()


class DictSink:
    """Collects merged tensors in memory."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self.tensors[name] = tensor
