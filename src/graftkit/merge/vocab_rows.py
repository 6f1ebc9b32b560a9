"""Put one embedding (or head) tensor of every input into the output vocabulary's row order.

A tokenizer-aligned merge plans, per input model, which of its rows each output row comes from
(:class:`RowMaps`); the executor applies them to each vocabulary tensor as it is read, so only
those tensors are remapped and memory stays a few tensors. A row an input lacks (a token it does
not have) takes the base's row when the base has it, else the mean of the inputs that have it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowMaps:
    """Per input model, the source row of every output row.

    Attributes:
        rows: per model (the base first when there is one, then the experts in plan order), an
            (R,) int64 tensor: the model's row for each output row, or -1 where it has none.
        base: the index in ``rows`` of the recipe's base model, or None without a base.
    """

    rows: tuple[torch.Tensor, ...]
    base: int | None

    @property
    def n_rows(self) -> int:
        return int(self.rows[0].numel())


def align_rows(maps: RowMaps, tensors: Sequence[torch.Tensor], models: Sequence[int]) -> list[torch.Tensor]:
    """Each tensor's rows in output order, in float32; missing rows filled by the stated rule.

    Args:
        maps: the plan's row maps.
        tensors: one (V_m, *D) tensor per input, in its model's row order.
        models: for each tensor, the index of its model in ``maps.rows``.

    Returns:
        One (R, *D) float32 tensor per input.
    """
    aligned, present = [], []
    for tensor, model in zip(tensors, models, strict=True):
        index = maps.rows[model]  # (R,)
        have = index >= 0  # (R,) bool
        out = torch.zeros((maps.n_rows, *tensor.shape[1:]), dtype=torch.float32)  # (R, *D)
        out[have] = tensor[index[have]].float()
        aligned.append(out)
        present.append(have)
    lacking = ~torch.stack(present).all(0)  # (R,) rows some input lacks: few (new tokens, padding)
    if bool(lacking.any()):
        where = lacking.nonzero().squeeze(1)  # (H,)
        fill = _fill([out[where] for out in aligned], [have[where] for have in present], models, maps.base)
        for out, have in zip(aligned, present, strict=True):
            hole = ~have[where]  # (H,)
            out[where[hole]] = fill[hole]
    return aligned


def _fill(
    rows: list[torch.Tensor], present: list[torch.Tensor], models: Sequence[int], base: int | None
) -> torch.Tensor:
    """For the rows some input lacks, the row such an input takes: the base's where the base has
    it, else the mean of the inputs that have it (0 where none has it; the plan warns then).

    Args:
        rows: per input, its (H, *D) aligned rows (0 where it lacks the row).
        present: per input, (H,) bool: whether it has each row.
    """
    count = torch.stack(present).sum(0).clamp_(min=1).float()  # (H,)
    mean = torch.stack(rows).sum(0).div_(count.view(-1, *([1] * (rows[0].dim() - 1))))  # (H, *D)
    if base not in models:
        return mean
    k = list(models).index(base)
    return torch.where(present[k].view(-1, *([1] * (mean.dim() - 1))), rows[k], mean)
