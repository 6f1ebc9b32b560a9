"""Per-expert statistics as tensor sources, for methods that declare ``needs_stats``.

A statistics folder (``graft stats``) is opened like a checkpoint: headers only, tensors read one
at a time by the executor next to the weights they weigh. Here: which folder each model entry
uses (given, or computed into a temporary folder first), whether it measured the kind the method
needs, and which tensors of the plan have statistics of the right shape.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from graftkit.errors import CheckpointError, RecipeError
from graftkit.merge.plan import MergePlan, _itemsize, _numel
from graftkit.merge.preflight import TiedHead
from graftkit.merge.recipe import StatsRequest
from graftkit.merge.sources import TensorSource
from graftkit.merge.validate import ResolvedRecipe

log = logging.getLogger("graftkit")


def given_folders(resolved: ResolvedRecipe) -> list[Path | None]:
    """Per model entry, its statistics folder; None where the recipe asks to compute them."""
    return [Path(m.stats) if isinstance(m.stats, str) else None for m in resolved.recipe.models]


def open_stats(resolved: ResolvedRecipe, folders: Sequence[Path | None]) -> list[TensorSource | None]:
    """Open the statistics file of the method's kind in each folder (headers only).

    Raises:
        RecipeError: a folder that is not a statistics folder or did not measure the kind needed.
    """
    from graftkit.io import Checkpoint, read_stats_info, stats_file

    kind = resolved.spec.needs_stats
    opened: list[TensorSource | None] = []
    try:
        for i, folder in enumerate(folders):
            if folder is None:
                opened.append(None)
                continue
            entry = resolved.recipe.models[i]
            fix = f"Write them with `graft stats {entry.model} --kind {kind} --task TASK -o DIR` and set `stats: DIR`"
            try:
                info = read_stats_info(folder)
            except CheckpointError as err:
                raise RecipeError(f"`models[{i}].stats` of {entry.model}: {err} {fix}.") from None
            if kind not in info["kinds"]:
                measured = ", ".join(map(str, info["kinds"])) or "nothing"
                raise RecipeError(
                    f"`models[{i}].stats` of {entry.model}: the statistics folder {str(folder)!r} measured "
                    f"{measured}, but `{resolved.spec.name}` needs {kind} statistics. {fix}."
                )
            if info.get("model") and Path(info["model"]).resolve() != Path(entry.model).resolve():
                log.warning("`models[%d].stats` was measured on %s, not on %s", i, info["model"], entry.model)
            opened.append(Checkpoint.open(stats_file(folder, kind)))
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(sources: Sequence[TensorSource | None]) -> None:
    for source in sources:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def attach_stats(plan: MergePlan, sources: Sequence[TensorSource | None]) -> MergePlan:
    """Check each expert's statistics against the plan and mark the jobs that read them.

    A merged tensor reads statistics when the method takes one for its shape
    (``spec.stats_shape``) and every contributing expert's statistics hold it; a tensor no
    expert has statistics for falls back to the method's no-statistics rule. Sources that are
    None (to be computed) are skipped, so a plan with them is for validation only (its byte
    counts leave the statistics out); attach the complete list again before executing it.

    Raises:
        CheckpointError: statistics of the wrong shape, or present for some experts and not others.
    """
    spec = plan.resolved.spec
    offset = 1 if plan.base is not None else 0
    labels = plan.labels[offset:]
    sources = [_aliased(s, e) for s, e in zip(sources, plan.experts, strict=True)]
    complete = all(s is not None for s in sources)
    problems: list[str] = []
    warnings = list(plan.warnings)
    jobs = []
    for job in plan.jobs:
        want = spec.stats_shape(job.shape) if job.merge else None
        if want is None:
            jobs.append(job)
            continue
        known = [(i, sources[i]) for i in job.experts if sources[i] is not None]
        having = [i for i, s in known if job.name in s.tensors]
        for i in having:
            shape = tuple(sources[i].tensors[job.name].shape)
            if shape != tuple(want):
                problems.append(
                    f"- `{job.name}` ({list(job.shape)}): the statistics of {labels[i]} have shape {list(shape)}, "
                    f"expected {list(want)}"
                )
        lacking = [i for i, _ in known if i not in having]
        absent = [i for i in lacking if job.name not in plan.experts[i].tensors]  # read from the base (on_missing)
        if having and absent:
            warnings.append(
                f"`{job.name}`: {labels[absent[0]]} lacks it (on_missing: base), so it has no statistics there; "
                f"the tensor is merged without statistics ({spec.name}'s fallback)."
            )
            having = []
        if having and lacking:
            covered, missing = labels[having[0]], labels[lacking[0]]
            problems.append(f"- `{job.name}`: the statistics of {covered} cover it but those of {missing} do not")
        uses = bool(having) and not lacking
        extra = sum(_numel(want) * _itemsize(sources[i].tensors[job.name].dtype) for i in having)
        extra = extra if uses and complete else 0
        jobs.append(dataclasses.replace(job, stats=uses, nbytes_in=job.nbytes_in + extra))
    if problems:
        shown = problems[:20] + ([f"- … and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise CheckpointError(
            f"The {spec.needs_stats} statistics do not fit the models:\n" + "\n".join(shown) + "\n"
            "Statistics must be measured on the very model they are listed with; run `graft stats` on it again."
        )
    return dataclasses.replace(plan, jobs=jobs, stats=list(sources), warnings=list(dict.fromkeys(warnings)))


def _aliased(stats: TensorSource | None, expert: TensorSource) -> TensorSource | None:
    """An expert whose tied head reads as its embedding gets its statistics read the same way."""
    if stats is None or not isinstance(expert, TiedHead):
        return stats
    if expert.head in stats.tensors or expert.embed not in stats.tensors:
        return stats
    return TiedHead(stats, expert.head, expert.embed)


@contextmanager
def computed_stats(plan: MergePlan, near: Path, device: str) -> Iterator[MergePlan]:
    """Compute the statistics the recipe asks for, attach them, and remove them on exit.

    They are written to a temporary folder beside ``near`` (the output: same disk, and cleaned
    up however the merge ends). A plan without requests is yielded unchanged.
    """
    from graftkit.stats import compute_stats

    resolved = plan.resolved
    requests = [(i, m) for i, m in enumerate(resolved.recipe.models) if isinstance(m.stats, StatsRequest)]
    if not requests:
        yield plan
        return
    near.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        work = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{near.name}.graft-stats-", dir=near.parent))
        )
        folders = given_folders(resolved)
        for i, entry in requests:
            request = entry.stats
            log.info(
                "computing %s statistics of %s (models[%d]) before the merge", resolved.spec.needs_stats, entry.model, i
            )
            folders[i] = compute_stats(
                entry.model,
                work / f"{i}-{os.path.basename(os.path.normpath(entry.model))}",
                task=request.task,
                jsonl=request.jsonl,
                kinds=(resolved.spec.needs_stats,),
                n=request.n,
                device=device,
                tokenizer=request.tokenizer,
                echo=log.info,
            )
        fresh = [
            folder if isinstance(m.stats, StatsRequest) else None
            for folder, m in zip(folders, resolved.recipe.models, strict=True)
        ]
        opened = open_stats(resolved, fresh)
        stack.callback(close_all, opened)
        merged = [o if o is not None else s for o, s in zip(opened, plan.stats or [None] * len(opened), strict=True)]
        attached = attach_stats(dataclasses.replace(plan, stats=None), merged)
        for warning in attached.warnings[len(plan.warnings) :]:  # about the statistics just computed
            log.warning(warning)
        yield attached


def describe(plan: MergePlan) -> str | None:
    """One line for `graft validate`: how many tensors read statistics, and what is computed first."""
    kind = plan.resolved.spec.needs_stats
    if kind is None or plan.stats is None:
        return None
    merged = [job for job in plan.jobs if job.merge]
    weighted = sum(job.stats for job in merged)
    line = f"  {kind} statistics: {weighted} of {len(merged)} merged tensors weighted by them, the rest averaged"
    pending = [f"models[{i}]" for i, s in enumerate(plan.stats) if s is None]
    if pending:
        line += f" (counted without {', '.join(pending)}, whose statistics the merge computes first)"
    return line
