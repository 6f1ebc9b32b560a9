"""Typed descriptions of merge methods and their parameters.

A method is a pure function on tensors (see :class:`MethodFn`) plus a :class:`MethodSpec` that
says which parameters it takes, their defaults and ranges, and the paper. The recipe layer
validates a recipe against these specs before any weight is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from graftkit.registry import Registry


class MethodFn(Protocol):
    """``fn(experts, *, base, weights, seeds, **params) -> Tensor``.

    Args:
        experts: N tensors of one shape, float32, on one device.
        base: the base model's tensor (same shape, float32), or None for methods without a base.
        weights: N per-expert weights ``w_i``.
        seeds: N per-expert seeds, derived from (recipe seed, expert index, tensor name) by
            :func:`graftkit.methods.rng.expert_seed`; used by randomised methods only.
        **params: the method's other parameters, resolved for this tensor. Per-expert
            parameters arrive as tuples of length N, global ones as scalars. Methods with
            ``needs_stats`` also receive ``stats``: N float32 statistic tensors, or None.

    Returns:
        The merged tensor, float32, same shape as the inputs.
    """

    def __call__(
        self,
        experts: Sequence[torch.Tensor],
        *,
        base: torch.Tensor | None,
        weights: Sequence[float],
        seeds: Sequence[int],
        **params: Any,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a method.

    ``low``/``high`` bound numeric values; ``*_open`` makes that bound exclusive.
    ``choices`` restricts string values. ``per_expert`` parameters are given under each model's
    ``parameters``; global ones under the recipe's top-level ``parameters``.
    """

    name: str
    type: type
    default: Any
    doc: str
    per_expert: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable, or None when it is."""
        if self.choices is not None:
            if value not in self.choices:
                return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
            return None
        if self.type is bool:
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number, got {value!r}"
            if value != value:  # NaN
                return "must be a number, got NaN"
            if self.low is not None and (value <= self.low if self.low_open else value < self.low):
                return f"must be {'>' if self.low_open else '>='} {self.low}, got {value}"
            if self.high is not None and (value >= self.high if self.high_open else value > self.high):
                return f"must be {'<' if self.high_open else '<='} {self.high}, got {value}"
        return None


@dataclass(frozen=True)
class MethodSpec:
    """A registered merge method.

    Attributes:
        name: registry name used in recipes (``merge_method``).
        fn: the pure tensor function.
        summary: one line for ``graft methods``.
        paper: citation with a link.
        params: parameters besides ``weight`` (every method takes a per-expert ``weight``).
        needs_base: whether ``base_model`` is required (task-vector family).
        min_models / max_models: how many experts it takes (slerp: exactly 2).
        randomized: whether it draws random numbers (and so uses ``seeds``).
        normalizes_weights: whether it divides by the sum of weights (a zero sum is an error).
        accepts_dare: whether the generic ``dare`` pre-step may be combined with it.
        dense: every input entry reaches the output through arithmetic (no entry is dropped),
            so a NaN/Inf in any input shows in the output: the executor then checks the output
            alone instead of every input.
        takes_out: ``fn`` accepts ``out=``, a float32 tensor of the result's shape that it writes
            the result into (and returns), so the caller can choose where the result lives.
        check_params: cross-parameter check on resolved values (each parameter a scalar, or a
            tuple of N for per-expert ones); returns why they are not acceptable, or None.
        needs_stats: the kind of per-expert statistics the method weighs the experts by (a
            ``graft stats --kind``, e.g. ``"fisher"``), or None. ``fn`` then takes ``stats=``: N
            tensors, one per expert, or None for a tensor the statistics do not cover.
        stats_shape: for a method with ``needs_stats``, the shape of one expert's statistic for
            a tensor of the given shape, or None when tensors of that shape take no statistic.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    summary: str
    paper: str
    params: tuple[ParamSpec, ...] = ()
    needs_base: bool = True
    min_models: int = 1
    max_models: int | None = None
    randomized: bool = False
    normalizes_weights: Callable[[dict[str, Any]], bool] = field(default=lambda params: False)
    accepts_dare: bool = True
    dense: bool = False
    takes_out: bool = False
    check_params: Callable[[dict[str, Any]], str | None] = field(default=lambda params: None)
    needs_stats: str | None = None
    stats_shape: Callable[[tuple[int, ...]], tuple[int, ...] | None] = field(default=lambda shape: None)

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)


METHODS: Registry[MethodSpec] = Registry("merge method")

WEIGHT = ParamSpec("weight", float, 1.0, "per-expert weight w_i", per_expert=True)
