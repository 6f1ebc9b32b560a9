"""How far experts moved from their base: delta statistics and DARE's rule of thumb (``graft inspect``).

For each tensor the base and every expert share, the deltas ``δ_k = expert_k − base`` are
measured in float32, one tensor at a time (memory: the base tensor plus one per expert).
Whole-model figures are aggregated exactly from sums and counts, never averaged averages:

- mean |δ| = Σ|δ| / entries, max |δ|, the share of entries with |δ| above 0.002 and 0.005;
- cosine(δ_i, δ_j) = Σ δ_i·δ_j / (‖δ_i‖ ‖δ_j‖) from accumulated dot products and squared norms;
- sign-conflict rate of a pair = entries where both deltas are non-zero and their signs differ,
  divided by all entries; with three or more experts, "any conflict" = entries where at least
  one expert moved up and another moved down, divided by all entries.

DARE (Yu et al. 2023, arXiv 2311.03099) drops most delta entries and rescales the rest; the paper
finds this works when deltas are small (supervised fine-tunes, |δ| mostly below 0.002–0.005) and
fails for experts trained far from the base (continued pre-training). :data:`DARE_RULE` states the
exact test applied to each expert. The tables ``graft inspect`` prints are in
:mod:`~graftkit.evaluate.inspect_render`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import CheckpointError, TensorValueError
from graftkit.io import Checkpoint

THRESHOLDS: tuple[float, ...] = (0.002, 0.005)
"""|δ| levels whose exceedance share is reported (the DARE paper's ranges for fine-tuned deltas)."""

DARE_MAX_MEAN_ABS = 0.005
DARE_RULE = (
    f"DARE applicable iff the expert's whole-model mean |delta| <= {DARE_MAX_MEAN_ABS} "
    "(Yu et al. 2023: dropping 90% of deltas works for small fine-tuning deltas, about <= 0.005, "
    "and fails for experts trained far from the base, e.g. continued pre-training)."
)


def _json_float(x: float) -> float | None:
    """JSON has no NaN/Inf: undefined values (e.g. the cosine of a zero delta) become null."""
    return x if math.isfinite(x) else None


@dataclass
class DeltaStats:
    """|δ| statistics of one expert over some entries (one tensor, or the whole model).

    Sums are float64 and counts are ints, so adding tensors together is exact up to float64 rounding.
    """

    numel: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    max_abs: float = 0.0
    above: dict[float, int] = field(default_factory=lambda: dict.fromkeys(THRESHOLDS, 0))

    @classmethod
    def of(cls, delta: torch.Tensor) -> DeltaStats:
        """Statistics of one float32 delta tensor (any shape)."""
        a = delta.abs()
        return cls(
            numel=delta.numel(),
            abs_sum=float(a.sum(dtype=torch.float64)),
            sq_sum=float(torch.linalg.vector_norm(delta, dtype=torch.float64) ** 2),
            max_abs=float(a.max()) if delta.numel() else 0.0,
            above={t: int((a > t).sum()) for t in THRESHOLDS},
        )

    def add(self, other: DeltaStats) -> None:
        self.numel += other.numel
        self.abs_sum += other.abs_sum
        self.sq_sum += other.sq_sum
        self.max_abs = max(self.max_abs, other.max_abs)
        for t in THRESHOLDS:
            self.above[t] += other.above[t]

    @property
    def mean_abs(self) -> float:
        return self.abs_sum / self.numel if self.numel else math.nan

    @property
    def norm(self) -> float:
        return math.sqrt(self.sq_sum)

    def share_above(self, threshold: float) -> float:
        return self.above[threshold] / self.numel if self.numel else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "numel": self.numel,
            "mean_abs": _json_float(self.mean_abs),
            "max_abs": self.max_abs,
            "l2_norm": self.norm,
            "share_above": {str(t): _json_float(self.share_above(t)) for t in THRESHOLDS},
        }


@dataclass
class PairStats:
    """How two experts' deltas relate: dot product and sign conflicts, over some entries."""

    i: int
    j: int
    dot: float = 0.0
    conflicts: int = 0
    numel: int = 0

    def add(self, other: PairStats) -> None:
        self.dot += other.dot
        self.conflicts += other.conflicts
        self.numel += other.numel

    def cosine(self, a: DeltaStats, b: DeltaStats) -> float:
        """``dot / (‖δ_i‖ ‖δ_j‖)``, given the two experts' stats over the same entries; NaN if one is 0."""
        denom = a.norm * b.norm
        return self.dot / denom if denom > 0 else math.nan

    @property
    def conflict_rate(self) -> float:
        return self.conflicts / self.numel if self.numel else math.nan


@dataclass
class TensorDeltas:
    """The deltas of one tensor: per-expert stats, per-pair stats and the any-conflict count."""

    name: str
    shape: tuple[int, ...]
    experts: list[DeltaStats]
    pairs: list[PairStats]
    any_conflicts: int

    @property
    def largest_mean_abs(self) -> float:
        return max(s.mean_abs for s in self.experts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "experts": [s.to_dict() for s in self.experts],
            "pairs": _pairs_dict(self.pairs, self.experts),
            "any_conflict_rate": _json_float(self.any_conflicts / self.experts[0].numel)
            if len(self.experts) >= 3 and self.experts[0].numel
            else None,
        }


def _pairs_dict(pairs: Sequence[PairStats], stats: Sequence[DeltaStats]) -> list[dict[str, Any]]:
    return [
        {
            "experts": [p.i, p.j],
            "cosine": _json_float(p.cosine(stats[p.i], stats[p.j])),
            "sign_conflict_rate": _json_float(p.conflict_rate),
        }
        for p in pairs
    ]


@dataclass(frozen=True)
class Verdict:
    """Whether DARE suits one expert, by :data:`DARE_RULE`."""

    expert: str
    dare_applicable: bool
    mean_abs: float
    reason: str


@dataclass
class InspectReport:
    """Delta statistics of experts against a base, per tensor and for the whole model.

    Attributes:
        base: the base checkpoint.
        experts: the expert checkpoints, in the order of every per-expert list.
        tensors: per-tensor deltas, in name order.
        totals: whole-model :class:`DeltaStats` per expert.
        pairs: whole-model :class:`PairStats` for every expert pair ``i < j``.
        any_conflicts: entries where some expert moved up and another down (≥ 3 experts).
        skipped: ``(tensor, reason)`` for tensors that were not compared.
    """

    base: str
    experts: list[str]
    tensors: list[TensorDeltas]
    totals: list[DeltaStats]
    pairs: list[PairStats]
    any_conflicts: int
    skipped: list[tuple[str, str]]

    @property
    def numel(self) -> int:
        """Entries compared per expert."""
        return self.totals[0].numel if self.totals else 0

    def cosine(self, i: int, j: int) -> float:
        """Whole-model cosine similarity of experts ``i`` and ``j``'s deltas."""
        pair = self._pair(i, j)
        return pair.cosine(self.totals[pair.i], self.totals[pair.j])

    def conflict_rate(self, i: int, j: int) -> float:
        """Whole-model sign-conflict rate of experts ``i`` and ``j`` (share of all entries)."""
        return self._pair(i, j).conflict_rate

    @property
    def any_conflict_rate(self) -> float | None:
        """Share of entries with a sign conflict among any experts; None with fewer than 3 experts."""
        if len(self.experts) < 3 or not self.numel:
            return None
        return self.any_conflicts / self.numel

    def verdicts(self) -> list[Verdict]:
        """One :class:`Verdict` per expert, by :data:`DARE_RULE`."""
        out = []
        for path, stats in zip(self.experts, self.totals, strict=True):
            ok = stats.mean_abs <= DARE_MAX_MEAN_ABS
            cmp = "<=" if ok else ">"
            reason = f"mean |delta| {stats.mean_abs:.3g} {cmp} {DARE_MAX_MEAN_ABS}"
            if not ok:
                reason += ": the expert moved far from the base; DARE's random drop would damage it"
            out.append(Verdict(path, ok, stats.mean_abs, reason))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "experts": self.experts,
            "thresholds": list(THRESHOLDS),
            "dare_rule": DARE_RULE,
            "numel": self.numel,
            "totals": [s.to_dict() for s in self.totals],
            "pairs": _pairs_dict(self.pairs, self.totals),
            "any_conflict_rate": self.any_conflict_rate,
            "verdicts": [
                {"expert": v.expert, "dare_applicable": v.dare_applicable, "reason": v.reason} for v in self.verdicts()
            ],
            "tensors": [t.to_dict() for t in self.tensors],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def _pair(self, i: int, j: int) -> PairStats:
        lo, hi = min(i, j), max(i, j)
        for p in self.pairs:
            if (p.i, p.j) == (lo, hi):
                return p
        raise IndexError(f"no expert pair ({i}, {j}) among {len(self.experts)} experts")


def tensor_deltas(name: str, base: torch.Tensor, experts: Sequence[torch.Tensor]) -> TensorDeltas:
    """Statistics of one tensor's deltas.

    Args:
        name: the tensor's state-dict key (for the report).
        base: the base tensor, any shape ``S`` and float dtype.
        experts: one tensor of shape ``S`` per expert.
    """
    b = base.float()
    deltas = [e.float() - b for e in experts]  # k × S, float32
    stats = [DeltaStats.of(d) for d in deltas]
    pairs = []
    for i in range(len(deltas)):
        for j in range(i + 1, len(deltas)):
            di, dj = deltas[i], deltas[j]
            dot = float(torch.sum(di * dj, dtype=torch.float64))
            # Zero entries have sign 0, so "signs multiply to −1" is "both non-zero and opposite".
            conflicts = int((torch.sign(di) * torch.sign(dj) < 0).sum())
            pairs.append(PairStats(i, j, dot, conflicts, di.numel()))
    any_conflicts = 0
    if len(deltas) >= 3:
        up = torch.zeros(b.shape, dtype=torch.bool)
        down = torch.zeros(b.shape, dtype=torch.bool)
        for d in deltas:
            up |= d > 0
            down |= d < 0
        any_conflicts = int((up & down).sum())
    return TensorDeltas(name, tuple(b.shape), stats, pairs, any_conflicts)


def inspect_deltas(base: str | Path, experts: Sequence[str | Path]) -> InspectReport:
    """Measure every expert's delta from ``base``, streaming one tensor at a time.

    Tensors compared are the floating-point tensors of the base that every expert holds with the
    same shape; the others are listed in :attr:`InspectReport.skipped` with the reason.

    Args:
        base: the base model folder or weights file.
        experts: one or more fine-tuned checkpoints of the same architecture.

    Raises:
        CheckpointError: no expert given, a checkpoint cannot be read, or no tensor in common.
        TensorValueError: a delta holds NaN/Inf (the message names the file and tensor).
    """
    if not experts:
        raise CheckpointError(f"graft inspect {base}: give at least one expert checkpoint to compare with the base.")
    with Checkpoint.open(base) as b_ck:
        cks = [Checkpoint.open(p) for p in experts]
        try:
            return _inspect(b_ck, cks)
        finally:
            for ck in cks:
                ck.close()


def _inspect(base: Checkpoint, experts: list[Checkpoint]) -> InspectReport:
    k = len(experts)
    totals = [DeltaStats() for _ in range(k)]
    pairs = [PairStats(i, j) for i in range(k) for j in range(i + 1, k)]
    any_conflicts = 0
    tensors: list[TensorDeltas] = []
    skipped: list[tuple[str, str]] = []
    for name, info in base.tensors.items():
        reason = _skip_reason(name, info, experts)
        if reason:
            skipped.append((name, reason))
            continue
        base_t = base.read(name)
        td = tensor_deltas(name, base_t, [ck.read(name) for ck in experts])
        for ck, s in zip(experts, td.experts, strict=True):
            if not math.isfinite(s.abs_sum):
                raise TensorValueError(
                    f"{ck.path}: tensor {name!r} differs from the base {base.path} by NaN or Inf, so its "
                    "delta cannot be measured. One of the two files holds non-finite weights; check it "
                    "with `graft check` or download it again."
                )
        for total, s in zip(totals, td.experts, strict=True):
            total.add(s)
        for total, p in zip(pairs, td.pairs, strict=True):
            total.add(p)
        any_conflicts += td.any_conflicts
        tensors.append(td)
    for i, ck in enumerate(experts):
        extra = sorted(set(ck.tensors) - set(base.tensors))
        skipped += [(n, f"only in expert {i} ({ck.path})") for n in extra]
    if not tensors:
        raise CheckpointError(
            f"{base.path} and {', '.join(str(ck.path) for ck in experts)} share no floating-point tensor "
            "of the same name and shape. Are they models of the same architecture and size?"
        )
    return InspectReport(
        str(base.path), [str(ck.path) for ck in experts], tensors, totals, pairs, any_conflicts, skipped
    )


def _skip_reason(name: str, info: Any, experts: Sequence[Checkpoint]) -> str | None:
    if not info.dtype.is_floating_point:
        return f"not floating point ({info.dtype})"
    for i, ck in enumerate(experts):
        other = ck.tensors.get(name)
        if other is None:
            return f"missing from expert {i} ({ck.path})"
        if other.shape != info.shape:
            return f"shape {list(other.shape)} in expert {i} vs {list(info.shape)} in the base"
    return None


def __getattr__(name: str) -> Any:
    # render_inspect is importable from here too; it lives in inspect_render, which imports this module.
    if name == "render_inspect":
        from graftkit.evaluate.inspect_render import render_inspect

        return render_inspect
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
