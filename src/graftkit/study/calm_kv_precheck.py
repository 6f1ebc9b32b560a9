"""The anchor pre-check: P14's activation patching, asking whether blocks after j still read the operands.

The anchor reads a KV-Arithmetic prompt (``Evaluate ab + wqb - c``) and its *oracle*, the same prompt with
each key's value in place (``Evaluate 47 + 5 - 12``). Keys are drawn so that each takes exactly as many
tokens as its value, so every position lines up. The anchor's state after block j at a set of positions of
the key prompt is replaced by its state on the oracle prompt, and the teacher-forced answer loss is compared
with the key prompt's (``L_key``) and the oracle's (``L_oracle``). The recovered share
``(L_key − L_patched) / (L_key − L_oracle)`` near 1 says the blocks after j read the operands from those
positions, which is what a bridge writing after block j relies on; near 0 says they were gathered earlier
(what P14 found for the small from-scratch anchors, in block 0).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftkit.registry import Registry
from graftkit.zoo.tasks._draw import word
from graftkit.zoo.tasks.calm_kv import KVConfig, _evaluate
from graftkit.zoo.tasks.chat import chat_prompt

IGNORE = -100


@dataclass(frozen=True)
class PatchExample:
    """A key prompt and its oracle, token-aligned; ``answer`` tokens (and eos) carry the labels."""

    key_ids: list[int]
    oracle_ids: list[int]
    labels: list[int]
    operands: list[tuple[int, int]]
    """Token spans ``[start, end)`` of each operand (the same in both prompts)."""
    prompt_len: int


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _aligned_key(tokenizer: Any, value: int, rng: random.Random, tries: int = 400) -> str | None:
    """A random 2–6 letter key whose `` key`` takes as many tokens as `` value`` (None if none is found)."""
    want = _tokens(tokenizer, f" {value}")
    for _ in range(tries):
        key = word(rng, 2, 6)
        if _tokens(tokenizer, f" {key}") == want:
            return key
    return None


def _expression(operands: Sequence[str], ops: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``"ab + wqb - c"`` and the character span of each operand in it."""
    text, spans = "", []
    for i, operand in enumerate(operands):
        text += f" {ops[i - 1]} " if i else ""
        spans.append((len(text), len(text) + len(operand)))
        text += operand
    return text, spans


def _example(kv: KVConfig, question: str, tokenizer: Any, rng: random.Random) -> PatchExample | None:
    """One aligned pair, or None when the draw does not line up token for token."""
    n_terms = rng.randint(kv.min_terms, kv.max_terms)
    values = [str(rng.randint(1, kv.max_value)) for _ in range(n_terms)]
    ops = [rng.choice(kv.ops) for _ in range(n_terms - 1)]
    keys = [_aligned_key(tokenizer, int(v), rng) for v in values]
    if None in keys:
        return None
    head, tail = chat_prompt(question).split("{expression}")
    key_text, spans = _expression(keys, ops)
    oracle_text, _ = _expression(values, ops)
    key = tokenizer(head + key_text + tail, add_special_tokens=True, return_offsets_mapping=True)
    oracle_ids = tokenizer(head + oracle_text + tail, add_special_tokens=True)["input_ids"]
    key_ids, offsets = key["input_ids"], key["offset_mapping"]
    token_spans = []
    for a, b in spans:  # the tokens overlapping each key's characters
        inside = [t for t, (s, e) in enumerate(offsets) if s < b + len(head) and e > a + len(head)]
        token_spans.append((inside[0], inside[-1] + 1))
    outside = set(range(len(key_ids))) - {t for a, b in token_spans for t in range(a, b)}
    if len(key_ids) != len(oracle_ids) or any(key_ids[t] != oracle_ids[t] for t in outside):
        return None
    answer = tokenizer(str(_evaluate(oracle_text)), add_special_tokens=False)["input_ids"]
    tail_ids = [*answer, tokenizer.eos_token_id]
    labels = [IGNORE] * len(key_ids) + tail_ids
    return PatchExample(key_ids + tail_ids, oracle_ids + tail_ids, labels, token_spans, len(key_ids))


def patch_examples(kv: KVConfig, question: str, tokenizer: Any, n: int, seed: int = 0) -> list[PatchExample]:
    """``n`` aligned key/oracle pairs with ``kv``'s expressions (values in ``1..max_value``, fresh keys)."""
    rng, out = random.Random(f"precheck/{seed}"), []
    for _ in range(50 * n):
        if (example := _example(kv, question, tokenizer, rng)) is not None:
            out.append(example)
            if len(out) == n:
                return out
    raise ValueError(f"found only {len(out)} of {n} token-aligned key/oracle prompts; check the tokenizer")


PositionSet = Callable[[PatchExample], list[int]]
SETS: Registry[PositionSet] = Registry("patch position set")
SETS.add("operands", lambda e: [t for a, b in e.operands for t in range(a, b)])
SETS.add("operand_ends", lambda e: [b - 1 for _, b in e.operands])
SETS.add("expression", lambda e: list(range(e.operands[0][0], e.operands[-1][1])))
SETS.add("prompt_from_first_operand", lambda e: list(range(e.operands[0][0], e.prompt_len)))


def patching_losses(
    model: Any, examples: Sequence[PatchExample], layers: Sequence[int], sets: Sequence[str], pad: int
) -> dict[str, Any]:
    """Answer losses of the key prompts, the oracles, and the key prompts patched after each of ``layers``
    at each position set; with the recovered shares. Returns ``{"key", "oracle", "patched", "recovered"}``."""
    import torch

    from graftkit.compose.discovery import discover
    from graftkit.compose.hooks import capture_outputs, rewrite_outputs
    from graftkit.evaluate.batching import right_pad

    blocks = discover(model).layers
    key, mask = right_pad([e.key_ids for e in examples], pad)  # (B, T) each
    oracle, _ = right_pad([e.oracle_ids for e in examples], pad)
    labels, _ = right_pad([e.labels for e in examples], IGNORE)

    def loss(ids: torch.Tensor) -> float:
        return float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)

    with torch.no_grad():
        with capture_outputs(blocks, set(layers)) as states:  # (B, T, D) after each block
            oracle_loss = loss(oracle)
        key_loss, patched = loss(key), {}
        for name in sets:
            where = torch.zeros(key.shape, dtype=torch.bool)
            for b, e in enumerate(examples):
                where[b, SETS.get(name)(e)] = True
            patched[name] = {}
            for j in layers:
                swap = {j: lambda h, j=j, w=where: torch.where(w[..., None].to(h.device), states[j].to(h.dtype), h)}
                with rewrite_outputs(blocks, swap):
                    patched[name][str(j)] = round(loss(key), 4)
    gap = key_loss - oracle_loss
    recovered = {
        name: {j: round((key_loss - v) / gap, 3) if abs(gap) > 1e-9 else None for j, v in by.items()}
        for name, by in patched.items()
    }
    return {"key": round(key_loss, 4), "oracle": round(oracle_loss, 4), "patched": patched, "recovered": recovered}


def precheck(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: :func:`patching_losses` of ``model`` (a model ref) on ``n`` pairs of ``kv`` / ``question``.

    Other inputs: ``layers``, ``sets``, ``seed``, ``first_layer`` (the first connection's anchor
    layer), ``threshold``, ``bf16``, ``threads``. ``passes``: the ``operands`` set (or the first set)
    patched after ``first_layer`` recovers at least ``threshold`` of the gap.
    """
    import torch

    from graftkit.evaluate.batching import pad_id
    from graftkit.study.calm_kv_stages import _set_threads
    from graftkit.zoo.train import load_model

    _set_threads(inputs)
    model, tokenizer = load_model(Path(inputs["model"]["path"]))
    kv, n = KVConfig(**inputs["kv"]), int(inputs["n"])
    examples = patch_examples(kv, inputs["question"], tokenizer, n, int(inputs["seed"]))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(inputs["bf16"])):
        out = patching_losses(model.eval(), examples, inputs["layers"], inputs["sets"], pad_id(tokenizer))
    first, sets = int(inputs["first_layer"]), list(inputs["sets"])
    judged = "operands" if "operands" in sets else sets[0]
    share = out["recovered"][judged].get(str(first))
    return {
        **out,
        "n": len(examples),
        "first_layer": first,
        "judged_set": judged,
        "threshold": float(inputs["threshold"]),
        "passes": share is not None and share >= float(inputs["threshold"]),
    }
