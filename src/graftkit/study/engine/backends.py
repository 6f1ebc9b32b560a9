"""Where units run: in this process one after the other, or as Ray tasks.

Every backend skips the units the store already holds and calls :meth:`UnitStore.run` for the
others, so caching, locking and resuming are the same whichever backend runs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from graftkit.errors import GraftError
from graftkit.registry import Registry
from graftkit.study.engine.units import Unit, UnitStore


class Backend(Protocol):
    """Runs units into a store and returns their results."""

    def map(self, units: Sequence[Unit], store: UnitStore, *, progress: str | None = None) -> list[dict[str, Any]]:
        """The results of ``units``, in input order.

        Args:
            units: the units to run; those already in ``store`` are not run again.
            store: where results are cached.
            progress: description of a progress bar; None shows none.
        """
        ...


BACKENDS: Registry[Callable[..., Backend]] = Registry("study backend")


def get_backend(name: str, **options: Any) -> Backend:
    """The backend registered as ``name`` (``"local"`` or ``"ray"``), built with ``options``."""
    return BACKENDS.get(name)(**options)


@BACKENDS.register("local")
class LocalBackend:
    """Runs the units in this process, one after the other."""

    def map(self, units: Sequence[Unit], store: UnitStore, *, progress: str | None = None) -> list[dict[str, Any]]:
        results = [store.get(unit) for unit in units]
        todo = [i for i, result in enumerate(results) if result is None]
        with _progress_bar(progress, len(todo)) as advance:
            for i in todo:
                results[i] = store.run(units[i])
                advance()
        return results  # type: ignore[return-value]  # every None was filled


@BACKENDS.register("ray")
class RayBackend:
    """Runs each uncached unit as a Ray task.

    Ray is started on first use if it is not running yet: in this process when ``address`` is
    None, else by connecting to the cluster at ``address`` (``"auto"`` finds a local one). The
    workers must be able to import the units' functions and see the store's folder.

    Args:
        address: a Ray cluster to connect to; None starts Ray locally.
        num_cpus: CPUs a locally started Ray may use (None: all).
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus

    def map(self, units: Sequence[Unit], store: UnitStore, *, progress: str | None = None) -> list[dict[str, Any]]:
        results = [store.get(unit) for unit in units]
        todo = [i for i, result in enumerate(results) if result is None]
        if not todo:
            return results  # type: ignore[return-value]
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                ignore_reinit_error=True,
                include_dashboard=False,
                num_cpus=self.num_cpus,
                log_to_driver=False,
            )
        task = ray.remote(_run_in_worker)
        refs: dict[str, Any] = {}  # one task per distinct unit, even if it is listed twice
        for i in todo:
            if units[i].key not in refs:
                refs[units[i].key] = task.remote(str(store.root), units[i])
        by_ref = {ref: key for key, ref in refs.items()}
        done: dict[str, dict[str, Any]] = {}
        pending = list(refs.values())
        with _progress_bar(progress, len(pending)) as advance:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done[by_ref[ready[0]]] = ray.get(ready[0])
                advance()
        for i in todo:
            results[i] = done[units[i].key]
        return results  # type: ignore[return-value]


def _run_in_worker(root: str, unit: Unit) -> dict[str, Any]:
    """The Ray task: the same cached, resumable run as in the driver."""
    return UnitStore(Path(root)).run(unit)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GraftError("the 'ray' backend needs Ray: install graftkit[ray]") from None
    return ray


@contextlib.contextmanager
def _progress_bar(description: str | None, total: int) -> Iterator[Callable[[], None]]:
    """Yield a callback to call after each unit; a rich bar is shown for two or more units."""
    if description is None or total < 2:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.update(task, advance=1)
