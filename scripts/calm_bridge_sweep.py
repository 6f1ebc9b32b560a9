"""Does a CALM bridge generalise to held-out keys, and what moves it? (issue 14, diagnosis)

The real-anchor key-value study's bridge reaches the same training loss over a random-weight m_A as over the
trained one, and scores ~11 % on held-out keys (docs/results/calm_kv.md, "Real anchor"). This script reuses a
replicate's frozen ``m_A`` and ``m_B`` (folders from the study's unit cache) and trains bridges that differ
only in what the composition data covers (``--fractions``: the share of keys, nested: the first 20 % of the
table are the first 20 % of the first 50 %) and in the optimiser (``--lr``, ``--weight-decay``, ``--steps``).
Every variant is scored on one fixed held-out set: test-split KV-Arithmetic over the keys outside the largest
fraction (or ``--held-out-fraction``). Scores are teacher-forced exact match (every answer token and the
closing eos are the argmax, which is what greedy decoding returns), at each checkpoint, so each variant gives
a curve over steps. Usage::

    python scripts/calm_bridge_sweep.py M_A M_B --seed 0 --fractions 0.2 0.5 --out /tmp/sweep

Prints one JSON line per (variant, step) and writes them to ``OUT/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from graftkit.compose.data import collate, tokenize
from graftkit.compose.files import load_bridge
from graftkit.compose.train import train_bridge
from graftkit.study.calm_kv_chat import chat_kv_tasks
from graftkit.study.calm_kv_data import distinct_examples, task_rows
from graftkit.study.calm_kv_real_settings import CalmKVRealSettings
from graftkit.zoo.tasks.calm_kv import KVConfig

QUESTION = CalmKVRealSettings.model_fields["question"].default
"""The study's question (``studies/calm_kv_real.yaml`` keeps the settings' default)."""


def kv_config(args: argparse.Namespace, fraction: float) -> KVConfig:
    """The study's key table (the preset's shape) with ``fraction`` of its keys as composition keys."""
    return KVConfig(
        seed=args.seed, n_keys=args.n_keys, max_value=args.max_value, min_terms=3, max_terms=3, ops="+-",
        train_fraction=fraction, unique_values=False,
    )  # fmt: skip


def eval_rows(kv: KVConfig, dataset: str, n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct test-split rows of ``dataset`` as chat prompts."""
    examples = distinct_examples(chat_kv_tasks(kv, QUESTION)[dataset], "test", n, seed=seed)
    return [{"prompt": e.prompt, "completion": e.answer} for e in examples]


@torch.no_grad()
def forced_exact_match(model, tokenizer, rows: list[dict[str, str]], batch_size: int = 32) -> float:
    """% of ``rows`` whose every completion token (eos included) is the model's argmax given the gold prefix."""
    examples = tokenize(rows, tokenizer, 128, True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    right = 0
    model.eval()
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        wrong = (logits[:, :-1].argmax(-1) != labels) & (labels != -100)
        right += int((~wrong.any(dim=1)).sum())
    return 100.0 * right / len(examples)


def rotate(x: torch.Tensor, heads: int, theta: float = 10_000.0) -> torch.Tensor:
    """Rotary position encoding of ``x`` ``(B, T, heads·hd)`` at positions ``0 .. T-1``, per head."""
    b, t, d = x.shape
    half = d // heads // 2
    freq = theta ** (-torch.arange(half, dtype=torch.float32) / half)
    angle = torch.arange(t, dtype=torch.float32)[:, None] * freq  # (T, hd/2)
    cos, sin = angle.cos().to(x.dtype)[:, None], angle.sin().to(x.dtype)[:, None]  # (T, 1, hd/2)
    a, c = x.view(b, t, heads, 2 * half).split(half, dim=-1)
    return torch.cat([a * cos - c * sin, a * sin + c * cos], dim=-1).view(b, t, d)


def use_rotary_cross_attention() -> None:
    """Diagnostic variant (not graftkit's bridge): rotary positions on every connection's queries and keys
    (forward hooks on ``q_proj`` and ``kv_proj``), so it can attend by relative position (anchor token t →
    augment token t) and not only by content. Valid for full-sequence forwards (training, the teacher-forced
    scores here), not for cached decoding."""
    from graftkit.compose.bridge import CrossAttentionConnection

    plain_init = CrossAttentionConnection.__init__

    def init(self, *args, **kwargs):
        plain_init(self, *args, **kwargs)
        heads = self.num_heads
        self.q_proj.register_forward_hook(lambda _m, _i, q: rotate(q, heads))

        def rotate_keys(_m, _i, kv):
            k, v = kv.chunk(2, dim=-1)
            return torch.cat([rotate(k, heads), v], dim=-1)

        self.kv_proj.register_forward_hook(rotate_keys)

    CrossAttentionConnection.__init__ = init


def train_variant(args: argparse.Namespace, fraction: float, folder: Path) -> Path:
    """Train (or resume) one bridge on composition rows over the first ``fraction`` of the keys."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "composition.jsonl"
    kv = kv_config(args, fraction)
    rows = task_rows(chat_kv_tasks(kv, QUESTION)["kv_arithmetic_k20"], args.n_composition, args.seed)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "anchor": args.m_b, "augments": [{"path": args.m_a}],
        "data": {"train": str(data), "max_length": 64},
        "optim": {"lr": args.lr, "weight_decay": args.weight_decay, "steps": args.steps,
                  "warmup": max(1, args.steps // 10), "batch_size": 16},
        "output": str(folder / "bridge"), "eval_every": args.every, "checkpoint_every": args.every,
        "seed": args.seed, "device": "cpu", "bf16": True, "progress": False,
    }  # fmt: skip
    return train_bridge(recipe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("m_a")
    parser.add_argument("m_b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-keys", type=int, default=100)
    parser.add_argument("--max-value", type=int, default=9)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--n-composition", type=int, default=4000)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--held-out-fraction", type=float, help="score keys after this share (default: the largest)")
    parser.add_argument("--rope", action="store_true", help="rotary positions in the cross-attention")
    parser.add_argument("--baseline", action="store_true", help="also score m_B alone on the held-out set")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.rope:
        use_rotary_cross_attention()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.m_b)
    outside = args.held_out_fraction or max(args.fractions)
    held_out = eval_rows(kv_config(args, outside), "kv_arithmetic_k80", args.n_eval, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "results.jsonl").open("a")

    def record(row: dict) -> None:
        print(json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()

    if args.baseline:  # the bridge starts as the identity: step 0 is m_B alone
        from transformers import AutoModelForCausalLM

        anchor = AutoModelForCausalLM.from_pretrained(args.m_b)
        record({"variant": "m_B", "step": 0, "held_out": forced_exact_match(anchor, tokenizer, held_out)})
    for fraction in args.fractions:
        name = f"f{fraction}-lr{args.lr}-wd{args.weight_decay}-s{args.steps}" + ("-rope" if args.rope else "")
        bridge = train_variant(args, fraction, args.out / name)
        own = eval_rows(kv_config(args, fraction), "kv_arithmetic_k20", args.n_eval, args.seed)
        folders = sorted((bridge / "checkpoints").glob("step-*")) + [bridge]
        for folder in folders:
            model = load_bridge(folder, verify=False)
            step = json.loads((folder / "bridge.json").read_text())["training"]["step"]
            row = {"variant": name, "fraction": fraction, "step": step}
            row |= {"held_out": forced_exact_match(model, tokenizer, held_out)}
            row |= {"composition_keys": forced_exact_match(model, tokenizer, own), "n_eval": len(held_out)}
            record(row)


if __name__ == "__main__":
    main()
