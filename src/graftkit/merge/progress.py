"""A rich progress bar for merges: tensors, GB read, GB/s, time left."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from graftkit.merge.model_scope import ranking_reads
from graftkit.merge.plan import MergePlan, TensorJob


@contextmanager
def merge_progress(plan: MergePlan, *, enabled: bool = True) -> Iterator[Callable[[TensorJob], None]]:
    """Yield a callback to call after each tensor; shows nothing when disabled or not a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield lambda job: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]merging"),
        BarColumn(),
        TextColumn("{task.fields[done]}/{task.fields[count]} tensors"),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        ranking = ranking_reads(plan.jobs, plan.resolved.global_params.get("trim_scope"))  # read twice first
        total = plan.total_in_bytes + 2 * sum(j.nbytes_in for j in ranking)
        task = bar.add_task("merge", total=total, done=0, count=len(plan.jobs) + 2 * len(ranking))
        done = 0

        def advance(job: TensorJob) -> None:
            nonlocal done
            done += 1
            bar.update(task, advance=job.nbytes_in, done=done)

        yield advance
