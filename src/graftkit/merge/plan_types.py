"""What a plan is made of: one :class:`TensorJob` per output tensor, gathered in a :class:`MergePlan`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from graftkit.merge.sources import TensorSource
from graftkit.merge.validate import ResolvedRecipe


@dataclass(frozen=True)
class TensorJob:
    """One output tensor.

    Attributes:
        name: tensor name in the output (and in every input, unless ``source`` says otherwise).
        shape: its shape in the output.
        out_dtype: the dtype it is stored in.
        experts: indices (into the plan's experts) of the experts that contribute.
        merge: False for non-float tensors, copied from the reference model unchanged.
        nbytes_in: bytes read to produce it (for progress and throughput).
        stats: whether the method reads each contributing expert's statistic of this tensor
            (methods with ``needs_stats``; see :mod:`graftkit.merge.stats_sources`).
        source: the tensor's name in the inputs when it differs from ``name`` (a layer stack
            renumbers layers).
        rows: for embedding and head tensors of a tokenizer-aligned merge, the row maps that
            put every input's rows in the output vocabulary's order
            (:class:`graftkit.merge.vocab_rows.RowMaps`), applied as the tensor is read.
    """

    name: str
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    experts: tuple[int, ...]
    merge: bool
    nbytes_in: int
    stats: bool = False
    source: str | None = None
    rows: Any = field(default=None, compare=False, repr=False)

    @property
    def input_name(self) -> str:
        """The name to read from the inputs."""
        return self.source or self.name


@dataclass
class MergePlan:
    """Everything the executor needs; built by :func:`graftkit.merge.plan.build_plan`."""

    resolved: ResolvedRecipe
    base: TensorSource | None
    experts: list[TensorSource]
    labels: list[str]
    jobs: list[TensorJob]
    n_layers: int
    out_dtype: torch.dtype | None
    warnings: list[str] = field(default_factory=list)
    stats: list[TensorSource | None] | None = None
    """Per expert, its statistics for a method with ``needs_stats`` (None: not computed yet)."""
    config_updates: dict[str, Any] = field(default_factory=dict)
    """Keys of the reference's config.json that the output changes (layer count, vocabulary size)."""
    summary: list[str] = field(default_factory=list)
    """Lines for ``graft validate``: the layer plan of a stack, the vocabulary of an alignment."""
    vocab: Any = None
    """The tokenizer alignment (:class:`graftkit.merge.vocab.VocabPlan`), or None."""

    @property
    def reference(self) -> TensorSource:
        """The model whose tensor list, config and tokenizer the output follows."""
        return self.base if self.base is not None else self.experts[0]

    @property
    def output_config(self) -> dict[str, Any]:
        """The output's config.json: the reference's with :attr:`config_updates` applied."""
        config = dict(self.reference.config or {})
        return {**config, **self.config_updates} if config else {}

    @property
    def total_in_bytes(self) -> int:
        return sum(job.nbytes_in for job in self.jobs)

    @property
    def total_out_bytes(self) -> int:
        return sum(_numel(j.shape) * _itemsize(j.out_dtype) for j in self.jobs)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
