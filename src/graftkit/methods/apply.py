"""Run one registered method on one tensor: defaults, checks, the generic DARE pre-step and
the final cast. The recipe layer calls :func:`run_method` once per tensor name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from graftkit.methods.params import RESCALE_CHOICES, per_expert
from graftkit.methods.spec import METHODS, MethodSpec
from graftkit.methods.stages import dare as dare_stage


def resolve_params(spec: MethodSpec, params: Mapping[str, Any] | None, n: int) -> dict[str, Any]:
    """Fill defaults, broadcast per-expert values to N-tuples and check every value.

    Args:
        spec: the method.
        params: given values (``weight`` excluded); per-expert ones a scalar or N values.
        n: number of experts.

    Returns:
        Every parameter of ``spec``: per-expert ones as N-tuples, global ones as scalars.

    Raises:
        ValueError: an unknown parameter or a value out of range.
    """
    given = dict(params or {})
    unknown = set(given) - {p.name for p in spec.params}
    if unknown:
        raise ValueError(f"{spec.name} takes no parameter {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for p in spec.params:
        value = given.get(p.name, p.default)
        value = per_expert(value, n, p.name) if p.per_expert else value
        for v in value if p.per_expert else (value,):
            why = p.check(v)
            if why:
                raise ValueError(f"{spec.name}: {p.name} {why}")
        out[p.name] = value
    why = spec.check_params(out)
    if why:
        raise ValueError(f"{spec.name}: {why}")
    return out


def _check_models(spec: MethodSpec, n: int, base: torch.Tensor | None, weights: Sequence[float]) -> None:
    if n < spec.min_models or (spec.max_models is not None and n > spec.max_models):
        most = "" if spec.max_models is None else f" and at most {spec.max_models}"
        raise ValueError(f"{spec.name} takes at least {spec.min_models}{most} models, got {n}")
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} experts")
    if spec.needs_base and base is None:
        raise ValueError(f"{spec.name} needs a base model")


def _dare_prestep(
    experts: Sequence[torch.Tensor], base: torch.Tensor, seeds: Sequence[int], dare: Mapping[str, Any]
) -> list[torch.Tensor]:
    """Replace each ``x_i`` by ``b + DARE(x_i − b)`` (a new tensor each)."""
    densities = per_expert(dare["density"], len(experts), "dare density")
    rescale = dare.get("rescale", "paper")
    if rescale not in RESCALE_CHOICES or any(not 0 < d <= 1 for d in densities):
        raise ValueError(f"dare needs density in (0, 1] and rescale in {RESCALE_CHOICES}, got {dict(dare)}")
    out = []
    for i, x in enumerate(experts):
        d = dare_stage(x - base, density=densities[i], seed=seeds[i], rescale=rescale)
        out.append(d.add_(base))
    return out


def run_method(
    spec_or_name: MethodSpec | str,
    experts: Sequence[torch.Tensor],
    *,
    base: torch.Tensor | None,
    weights: Sequence[float],
    seeds: Sequence[int] = (),
    params: Mapping[str, Any] | None = None,
    dare: Mapping[str, Any] | None = None,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
    model_wide: Mapping[str, Any] | None = None,
    stats: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Merge one tensor with a registered method.

    Inputs are upcast to float32, the method runs in float32, and the result is cast once to
    ``out_dtype``.

    Args:
        spec_or_name: a :class:`MethodSpec` or a registry name.
        experts: N (S) tensors of any float dtype, on one device.
        base: (S) base tensor, or None for methods without a base.
        weights: N weights.
        seeds: N expert seeds (:func:`graftkit.methods.rng.expert_seed`); needed when the method
            is randomised or ``dare`` is given.
        params: the method's parameters for this tensor (see :func:`resolve_params`).
        dare: ``{"density": float | N floats, "rescale": "paper" | "none" | "l1"}`` to replace
            each expert by ``b + DARE(x_i − b)`` first (needs a base; draws from the ``"dare"``
            stream of each seed, the same as ``dare_linear``/``dare_ties``).
        out_dtype: dtype of the result; None keeps float32.
        out: a float32 tensor of the result's shape to write the result into; only for methods
            with ``takes_out`` and without ``dare``.
        model_wide: values the merge computed over the whole model for this tensor (the
            ``cutoff`` and ``tied_keep`` of TIES' ``trim_scope: model``), passed on unchecked.
        stats: for methods with ``needs_stats``, N per-expert statistics of this tensor (any
            float dtype, upcast to float32), or None when the statistics do not cover it.

    Returns:
        (S) merged tensor of ``out_dtype``.
    """
    spec = METHODS.get(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
    n = len(experts)
    _check_models(spec, n, base, weights)
    resolved = resolve_params(spec, params, n)
    if spec.normalizes_weights(resolved) and sum(weights) == 0:
        raise ValueError(f"{spec.name} divides by the sum of the weights, which is 0")
    if (spec.randomized or dare) and len(seeds) != n:
        raise ValueError(f"{spec.name} needs {n} seeds, got {len(seeds)}")
    if out is not None and (not spec.takes_out or dare or out.dtype != torch.float32):
        raise ValueError(f"{spec.name}: out= needs a method that takes it, no dare pre-step and a float32 out")
    if stats is not None and (not spec.needs_stats or len(stats) != n):
        raise ValueError(
            f"{spec.name} takes no statistics" if not spec.needs_stats else f"{len(stats)} stats for {n} experts"
        )
    xs = [x.float() for x in experts]
    b = None if base is None else base.float()
    if dare:
        if not spec.accepts_dare or b is None:
            raise ValueError(f"{spec.name} cannot take the dare pre-step (it needs a base model)")
        xs = _dare_prestep(xs, b, seeds, dare)
    into = {"out": out} if out is not None else {}
    if spec.needs_stats:
        into["stats"] = None if stats is None else tuple(s.float() for s in stats)
    merged = spec.fn(xs, base=b, weights=tuple(weights), seeds=tuple(seeds), **resolved, **into, **(model_wide or {}))
    return merged if out_dtype is None else merged.to(out_dtype)
