"""Is a merged model garbage? A short language-modelling probe beside its parents (``graft check``).

The merged model and each parent (base, experts) are loaded one at a time with
``AutoModelForCausalLM`` (never remote code; CUDA when available, else CPU, float32) and scored
on the same probe texts: the mean next-token loss over every token after ``bos``, pooled by token.
The probe texts are, in order of preference: the lines of a texts file; prompt + answer samples
of registered zoo tasks; a fixed list of plain English sentences when the zoo is absent or the
tokenizer cannot encode the task texts (:mod:`~graftkit.evaluate.probe_texts`). The table is
printed by :mod:`~graftkit.evaluate.sanity_render`.

The merged model is flagged when (rules, in :data:`RULES`):

1. **non-finite** — any logit on the probe, or any weight in its files, is NaN or Inf;
2. **loss far above the parents** — ``merged loss > LOSS_FACTOR × max(parent losses) + LOSS_MARGIN``
   (2 × worst parent + 1 nat: a working merge lands near or between its parents, while a broken
   one is usually worse than uniform guessing);
3. **identical to the base** — all its weights equal the base's, or its logits on the probe are
   bit-identical to the base's, while some expert differs from the base (with no expert given,
   a merge that reproduces the base is flagged too: nothing was merged in).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import CheckpointError, GraftError
from graftkit.evaluate.probe_texts import FALLBACK_TEXTS, ProbeTextsError, load_probe_texts  # noqa: F401  (re-export)
from graftkit.evaluate.sanity_render import render_check  # noqa: F401  (re-export)
from graftkit.io import Checkpoint

LOSS_FACTOR = 2.0
LOSS_MARGIN = 1.0
MAX_TOKENS = 128
"""Probe texts are cut to this many tokens (bos included)."""

RULES = (
    "non-finite: any probe logit or stored weight of the merged model is NaN/Inf",
    f"loss: merged loss > {LOSS_FACTOR:g} x max(parent losses) + {LOSS_MARGIN:g} nats/token",
    "identical: merged weights or probe logits equal the base's while some expert differs from it",
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class SanityCheckError(GraftError):
    """The merged model failed ``graft check`` (the message lists each flag)."""


@dataclass
class ModelProbe:
    """One model's result on the probe.

    Attributes:
        role: ``"merged"``, ``"base"`` or ``"expert 0"``, ``"expert 1"``, ...
        path: the model folder.
        loss: mean next-token loss in nats per token (NaN when the logits are not finite).
        tokens: tokens scored.
        finite: every logit on the probe was finite.
        logits_sha256: digest of all probe logits (float32 bytes), to spot bit-identical outputs.
    """

    role: str
    path: str
    loss: float
    tokens: int
    finite: bool
    logits_sha256: str

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if math.isfinite(self.loss) and self.loss < 700 else math.inf


@dataclass
class CheckReport:
    """The merged model's probe next to its parents', and what was flagged.

    ``ok`` is true when nothing was flagged; ``notes`` holds observations that do not fail the check.
    """

    merged: ModelProbe
    base: ModelProbe | None
    experts: list[ModelProbe]
    texts_source: str
    texts: list[str]
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.flags

    @property
    def parents(self) -> list[ModelProbe]:
        return ([self.base] if self.base else []) + self.experts

    def to_dict(self) -> dict[str, Any]:
        def probe(p: ModelProbe) -> dict[str, Any]:
            d = asdict(p)
            d["loss"] = p.loss if math.isfinite(p.loss) else None
            d["perplexity"] = p.perplexity if math.isfinite(p.perplexity) else None
            return d

        return {
            "ok": self.ok,
            "flags": self.flags,
            "notes": self.notes,
            "rules": list(RULES),
            "texts_source": self.texts_source,
            "n_texts": len(self.texts),
            "models": [probe(p) for p in (self.merged, *self.parents)],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def sanity_check(
    merged: str | Path,
    base: str | Path | None,
    experts: Sequence[str | Path] = (),
    texts: Sequence[str] | str | Path | None = None,
    *,
    tasks: Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int = 8,
) -> CheckReport:
    """Probe a merged model and its parents and flag garbage by the rules in the module docstring.

    Args:
        merged: the merged model folder.
        base: the base model folder, or None (the identical-to-base rule is then skipped).
        experts: the expert folders.
        texts: probe texts, or a file with one text per line; None for task samples.
        tasks: zoo task names to sample when ``texts`` is None (default: every held-in task).
        device: ``"cpu"``, ``"cuda"``, ...; None for CUDA when available.
        batch_size: texts per forward pass.

    Raises:
        CheckpointError: a folder cannot be loaded, or none of them holds a tokenizer.
        ProbeTextsError: the texts file is missing or empty, or task texts cannot be encoded.
    """
    from transformers import AutoTokenizer

    from graftkit.evaluate.runner import load_model

    folders = [Path(merged), *([Path(base)] if base is not None else []), *map(Path, experts)]
    tok_dir = next((f for f in folders if any((f / n).is_file() for n in TOKENIZER_FILES)), None)
    if tok_dir is None:
        raise CheckpointError(
            f"{merged}: no tokenizer in the merged folder or its parents' ({', '.join(map(str, folders))}). "
            "Save the tokenizer into the merged folder (tokenizer.save_pretrained) and run the check again."
        )
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=False)
    source, probe_texts = load_probe_texts(tokenizer, texts, tasks)
    rows = [r for r in (_encode(tokenizer, t) for t in probe_texts) if len(r) >= 2]
    if not rows:  # a row needs a token after the first to be scored
        raise ProbeTextsError(
            f"none of the probe texts from {source} encodes to two or more tokens; give longer texts."
        )

    roles = [("merged", Path(merged))]
    roles += [("base", Path(base))] if base is not None else []
    roles += [(f"expert {i}", Path(e)) for i, e in enumerate(experts)]
    probes = []
    with _quiet_loading():
        for role, path in roles:  # one model in memory at a time
            model, _ = load_model(path, device=device, tokenizer=tok_dir)
            probes.append(_probe(model, rows, _pad(tokenizer), role, str(path), batch_size))
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    report = CheckReport(
        merged=probes[0],
        base=probes[1] if base is not None else None,
        experts=probes[2 if base is not None else 1 :],
        texts_source=source,
        texts=list(probe_texts),
    )
    _apply_rules(report, Path(merged), Path(base) if base is not None else None)
    return report


def check_after_merge(out: Path, base: Path | None, experts: list[Path]) -> CheckReport:
    """The check ``graft merge --check`` runs on a fresh output: default probe, default device."""
    return sanity_check(out, base, experts)


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' per-model loading bars (they would bury the table and break --json logs)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _apply_rules(report: CheckReport, merged: Path, base: Path | None) -> None:
    m = report.merged
    bad_weights = _nonfinite_weights(merged)
    if not m.finite:
        report.flags.append("non-finite: the merged model's logits hold NaN/Inf on the probe texts")
    if bad_weights:
        shown = ", ".join(bad_weights[:5]) + (f" (+{len(bad_weights) - 5} more)" if len(bad_weights) > 5 else "")
        report.flags.append(f"non-finite: weights hold NaN/Inf in {shown}")
    for p in report.parents:
        if not p.finite:
            report.notes.append(f"{p.role} ({p.path}) gives NaN/Inf logits itself")

    parent_losses = [p.loss for p in report.parents if math.isfinite(p.loss)]
    if parent_losses and math.isfinite(m.loss):
        limit = LOSS_FACTOR * max(parent_losses) + LOSS_MARGIN
        if m.loss > limit:
            report.flags.append(
                f"loss: the merged model's loss {m.loss:.3g} is far above every parent's "
                f"(worst parent {max(parent_losses):.3g}; limit {limit:.3g})"
            )
    elif not parent_losses:
        report.notes.append("no parent with a finite loss: the loss rule was not applied")

    if report.base is not None and base is not None:
        same_weights = _same_weights(merged, base)
        same_logits = m.logits_sha256 == report.base.logits_sha256
        if same_weights or same_logits:
            moved = [e for e in report.experts if e.logits_sha256 != report.base.logits_sha256]
            why = "all its weights equal" if same_weights else "its probe logits are identical to"
            if moved or not report.experts:
                whose = f"{len(moved)} expert(s) differ from it" if moved else "no expert was given"
                report.flags.append(f"identical: {why} the base's, yet {whose}; nothing was merged in")
            else:
                report.notes.append(f"{why} the base's, as every expert's do")


def _encode(tokenizer: Any, text: str) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    return ids[:MAX_TOKENS]


def _pad(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


@torch.inference_mode()
def _probe(
    model: torch.nn.Module, rows: list[list[int]], pad: int, role: str, path: str, batch_size: int
) -> ModelProbe:
    device = next(model.parameters()).device
    nll, tokens, finite, digest = 0.0, 0, True, hashlib.sha256()
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, r in enumerate(batch):  # right padding: every row starts at position 0
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
        real = logits[mask.bool()]  # (real tokens, V)
        finite = finite and bool(torch.isfinite(real).all())
        digest.update(real.cpu().numpy().tobytes())
        # Logits at t predict token t + 1; padding targets are masked out.
        logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        scored = mask[:, 1:].bool()
        nll -= float(logp[scored].sum(dtype=torch.float64))
        tokens += int(scored.sum())
    loss = nll / tokens if tokens and finite else math.nan
    return ModelProbe(role, path, loss, tokens, finite, digest.hexdigest())


def _nonfinite_weights(path: Path) -> list[str]:
    """Names of the floating-point tensors in ``path`` that hold NaN or Inf."""
    bad = []
    with Checkpoint.open(path) as ck:
        for name, info in ck.tensors.items():
            if info.dtype.is_floating_point and not bool(torch.isfinite(ck.read(name)).all()):
                bad.append(name)
    return bad


def _same_weights(a: Path, b: Path) -> bool:
    """Both checkpoints hold the same tensor names with equal values (stops at the first difference)."""
    with Checkpoint.open(a) as ca, Checkpoint.open(b) as cb:
        if ca.tensors.keys() != cb.tensors.keys():
            return False
        return all(torch.equal(ca.read(n).float(), cb.read(n).float()) for n in ca.tensors)
