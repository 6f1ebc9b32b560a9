"""Stream a :class:`MergePlan`: read, merge, cast and write one tensor at a time.

Reading the next tensors overlaps merging the current one (a small thread pool; file reads and
torch kernels release the GIL) and writing runs on its own thread, so the wall time approaches
the time it takes to read the inputs. At most ``prefetch + 2`` tensors' worth of inputs are in
memory at once, whatever the model size.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from graftkit.errors import TensorValueError
from graftkit.merge.model_scope import ModelCutoffs, model_cutoffs
from graftkit.merge.params import resolve
from graftkit.merge.plan import MergePlan, TensorJob
from graftkit.merge.sources import TensorSink
from graftkit.merge.vocab_rows import align_rows
from graftkit.methods import expert_seed, run_method

log = logging.getLogger(__name__)

PREFETCH_BYTES = 1 << 30  # read ahead at most this much beyond the tensor being merged


@dataclass
class _Inputs:
    job: TensorJob
    base: torch.Tensor | None
    experts: list[torch.Tensor]
    stats: list[torch.Tensor] | None = None  # per contributing expert, when the job reads statistics


def execute(
    plan: MergePlan,
    sink: TensorSink,
    *,
    device: str | torch.device = "cpu",
    prefetch: int = 2,
    on_tensor: Callable[[TensorJob], None] | None = None,
    skip: set[str] | None = None,
) -> None:
    """Merge every tensor of ``plan`` into ``sink``.

    Args:
        plan: the validated plan.
        sink: where merged tensors go (a sharded writer or a dict).
        device: where the math runs; inputs are moved there in float32.
        prefetch: how many tensors' inputs to read ahead.
        on_tensor: called after each tensor is handed to the sink, and with ``trim_scope: model``
            after each tensor of the two ranking reads before that (progress).
        skip: tensor names already written (resume).
    """
    device = torch.device(device)
    scope = _model_scope(plan, device, on_tensor)  # before skipping: the ranking spans every tensor
    jobs = [job for job in plan.jobs if not skip or job.name not in skip]
    with (
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="graft-read") as readers,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="graft-write") as writer,
    ):
        pending_write: Future[None] | None = None
        check_output = plan.resolved.spec.dense and plan.resolved.recipe.dare is None
        for inputs in _read_ahead(plan, jobs, readers, prefetch):
            into = _destination(plan, inputs.job, sink, device)
            extra = scope.params(inputs.job) if scope is not None and inputs.job.merge else None
            merged = merge_one(
                plan, inputs.job, inputs.base, inputs.experts, device, out=into, extra=extra, stats=inputs.stats
            )
            if pending_write is not None:
                _finish_write(plan, pending_write)
            check = check_output and inputs.job.merge
            pending_write = writer.submit(_write, sink, inputs.job, merged, check, into is not None)
            if on_tensor is not None:
                on_tensor(inputs.job)
        if pending_write is not None:
            _finish_write(plan, pending_write)


class _NonFiniteOutput(Exception):
    def __init__(self, job: TensorJob) -> None:
        self.job = job


def _write(sink: TensorSink, job: TensorJob, merged: torch.Tensor, check: bool, in_place: bool) -> None:
    """On the writer thread: check a dense method's output for NaN/Inf (one pass), then write it
    (or, when it was computed in its place in the output, commit it)."""
    if check and merged.is_floating_point() and not _all_finite(merged):
        raise _NonFiniteOutput(job)
    if in_place:
        sink.commit(job.name, merged)  # type: ignore[attr-defined]
    else:
        sink.write(job.name, merged)


def _destination(plan: MergePlan, job: TensorJob, sink: TensorSink, device: torch.device) -> torch.Tensor | None:
    """The tensor's place in the output (a shard's memory map) to compute it into, or None.

    Only when the method can write into a given tensor, nothing follows it (no DARE pre-step, no
    cast: float32 out) and the sink offers places; this skips allocating a fresh output tensor and
    copying it into the file, the two largest costs of a linear merge.
    """
    resolved = plan.resolved
    eligible = resolved.spec.takes_out and resolved.recipe.dare is None and job.merge
    if not eligible or device.type != "cpu" or job.out_dtype != torch.float32:
        return None
    destination = getattr(sink, "destination", None)
    return destination(job.name) if destination is not None else None


def _finish_write(plan: MergePlan, pending: Future[None]) -> None:
    """Wait for a write; a NaN/Inf output is traced back to the input that caused it."""
    try:
        pending.result()
    except _NonFiniteOutput as bad:
        inputs = _read_job(plan, bad.job)
        label = _first_nonfinite(plan, bad.job, inputs.base, inputs.experts, inputs.stats)
        raise _nonfinite_error(bad.job.name, label) from None


def merge_one(
    plan: MergePlan,
    job: TensorJob,
    base: torch.Tensor | None,
    experts: list[torch.Tensor],
    device: torch.device,
    out: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
    stats: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Merge one tensor's inputs (storage dtype, CPU) into its output (``job.out_dtype``, CPU),
    or into ``out`` (float32, CPU) for methods that take one. ``extra``: parameters computed
    over the whole model (the model-scope trim's cutoffs). ``stats``: the contributing experts'
    statistics of this tensor, for methods with ``needs_stats`` (None: none cover it)."""
    if not job.merge:
        return base if base is not None else experts[0]
    resolved = plan.resolved
    # Dense methods carry every input entry into the output, so one check of the output finds
    # any NaN/Inf input; sparsifying ones may drop it, so each input is checked instead.
    check_inputs = not resolved.spec.dense or resolved.recipe.dare is not None
    uses_base = resolved.spec.needs_base or resolved.recipe.dare is not None
    base_f = _to_compute(base, device) if uses_base else None
    expert_f = [_to_compute(t, device) for t in experts]
    stats_f = None if stats is None else [_to_compute(t, device) for t in stats]
    if check_inputs and (bad := _first_nonfinite(plan, job, base_f, expert_f, stats_f)) is not None:
        raise _nonfinite_error(job.name, bad)
    name_in = job.input_name  # filters match the name in the inputs (a stack renumbers its layers)
    params = {
        name: resolve(value, name_in, plan.n_layers, _default(plan, name))
        for name, value in resolved.global_params.items()
    }
    per_expert = {
        name: tuple(
            resolve(resolved.expert_params[i][name], name_in, plan.n_layers, _default(plan, name)) for i in job.experts
        )
        for name in resolved.expert_params[0]
        if name != "weight"
    }
    weights = tuple(
        float(resolve(resolved.expert_params[i]["weight"], name_in, plan.n_layers, 1.0)) for i in job.experts
    )
    seeds = tuple(expert_seed(resolved.recipe.seed, i, job.name) for i in job.experts)
    dare = resolved.recipe.dare.model_dump() if resolved.recipe.dare else None
    merged = run_method(
        resolved.spec,
        expert_f,
        base=base_f,
        weights=weights,
        seeds=seeds,
        params={**params, **per_expert},
        dare=dare,
        out=out,
        model_wide=extra,
        stats=stats_f,
    )
    return merged if out is not None else merged.to(device="cpu", dtype=job.out_dtype)


def _model_scope(
    plan: MergePlan, device: torch.device, on_tensor: Callable[[TensorJob], None] | None
) -> ModelCutoffs | None:
    """With ``trim_scope: model``, rank every expert's deltas over the whole model first."""
    resolved = plan.resolved
    if resolved.global_params.get("trim_scope") != "model":
        return None
    densities = [float(params["density"]) for params in resolved.expert_params]
    log.info("trim_scope: model: ranking each expert's deltas over the whole model (two reads of the inputs)")

    def deltas(job: TensorJob) -> list[torch.Tensor]:
        inputs = _read_job(plan, job)
        base = _to_compute(inputs.base, device)
        return [_to_compute(x, device) - base for x in inputs.experts]  # not in place: inputs may be shared

    return model_cutoffs(plan.jobs, densities, deltas, on_job=on_tensor)


def _default(plan: MergePlan, name: str):
    param = plan.resolved.spec.param(name)
    return param.default if param is not None else 1.0


def _to_compute(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device=device, dtype=torch.float32, non_blocking=True)


def _first_nonfinite(
    plan: MergePlan,
    job: TensorJob,
    base: torch.Tensor | None,
    experts: list[torch.Tensor],
    stats: list[torch.Tensor] | None = None,
) -> str | None:
    """The label of the first input of ``job`` holding NaN or Inf (``sum`` is one fast pass)."""
    offset = 1 if plan.base is not None else 0
    labelled = [(plan.labels[0], base)]
    labelled += [(plan.labels[offset + i], t) for i, t in zip(job.experts, experts, strict=True)]
    if stats is not None:
        labelled += [
            (f"the statistics of {plan.labels[offset + i]}", t) for i, t in zip(job.experts, stats, strict=True)
        ]
    return next((label for label, t in labelled if t is not None and not _all_finite(t)), None)


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf in ``tensor``: one pass, summed in float32 so float16 cannot overflow."""
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32)))


def _nonfinite_error(name: str, label: str | None) -> TensorValueError:
    if label is None:
        return TensorValueError(
            f"Merging tensor `{name}` produced NaN or Inf from finite inputs (overflow?); "
            "check the recipe's weights and lambda."
        )
    return TensorValueError(
        f"Tensor `{name}` of {label} holds NaN or Inf values; a merge would spread them. "
        "Check or re-export that checkpoint."
    )


def _read_ahead(
    plan: MergePlan,
    jobs: list[TensorJob],
    pool: ThreadPoolExecutor,
    prefetch: int,
    budget: int = PREFETCH_BYTES,
) -> Iterator[_Inputs]:
    """Yield each job's inputs, keeping up to ``prefetch`` jobs (and ``budget`` bytes) read ahead."""
    queue: deque[tuple[int, Future[_Inputs]]] = deque()
    upcoming = deque(jobs)

    def fill() -> None:
        while upcoming and len(queue) <= prefetch:
            ahead = sum(nbytes for nbytes, _ in queue)
            if queue and ahead + upcoming[0].nbytes_in > budget:
                return
            job = upcoming.popleft()
            queue.append((job.nbytes_in, pool.submit(_read_job, plan, job)))

    fill()
    while queue:
        inputs = queue.popleft()[1].result()
        fill()
        yield inputs


def _read_job(plan: MergePlan, job: TensorJob) -> _Inputs:
    resolved = plan.resolved
    name = job.input_name
    uses_base = resolved.spec.needs_base or resolved.recipe.dare is not None or not job.merge
    missing = any(name not in plan.experts[i].tensors for i in job.experts)
    fills = job.rows is not None  # an aligned vocabulary fills rows an expert lacks from the base
    base = _read(plan.base, name) if plan.base is not None and (uses_base or missing or fills) else None
    if not job.merge:
        first = plan.experts[job.experts[0] if job.experts else 0]
        return _Inputs(job, base if base is not None else _read(first, name), [])
    experts = []
    for i in job.experts:
        source = plan.experts[i]
        experts.append(_read(source, name) if name in source.tensors else base)
    if fills:
        base, experts = _aligned(plan, job, base, experts)
    return _Inputs(job, base, experts, _read_stats(plan, job) if job.stats else None)


def _aligned(
    plan: MergePlan, job: TensorJob, base: torch.Tensor | None, experts: list[torch.Tensor]
) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """The job's inputs with their rows in the output vocabulary's order (see ``vocab_rows``)."""
    offset = 1 if plan.base is not None else 0
    models = [offset + i if job.input_name in plan.experts[i].tensors else 0 for i in job.experts]
    given = ([base] if base is not None else []) + experts
    out = align_rows(job.rows, given, ([0] if base is not None else []) + models)
    return (out[0], out[1:]) if base is not None else (None, out)


def _read_stats(plan: MergePlan, job: TensorJob) -> list[torch.Tensor]:
    """Each contributing expert's statistic of ``job``, read lazily like its weight."""
    sources = [plan.stats[i] if plan.stats is not None else None for i in job.experts]
    if any(source is None for source in sources):
        raise RuntimeError(f"tensor {job.name!r} reads statistics that were never attached to the plan")
    return [_read(source, job.name) for source in sources]


def _read(source, name: str) -> torch.Tensor:
    """Zero-copy (memory-mapped, copy-on-write) when the source offers it, else a plain read."""
    mapped = getattr(source, "read_mapped", None)
    return mapped(name) if mapped is not None else source.read(name)
