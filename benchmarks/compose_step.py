"""CALM training-step cost: the composition vs its parts, in one run.

Times, on randomly initialised Llama-shaped models built from configs (no downloads):

- anchor fwd+bwd: the anchor alone with frozen weights, the loss backpropagated (activation gradients
  only) down to the output of the first connected anchor layer — exactly the backward the
  composition runs through the anchor, so the difference is the bridge;
- anchor fwd+bwd (to embeddings), anchor fwd+bwd (weights): backward through every layer, without
  and with weight gradients, for reference;
- augment fwd: the augment backbone under ``no_grad``, as the composition runs it;
- composition fwd+bwd: ``ComposedModel(..., labels)`` and ``loss.backward()`` into the bridge.

Overhead = composition / (anchor fwd+bwd + augment fwd) − 1; the target is ≤ 15 %. Rounds are
interleaved and the median is reported, which keeps drift on a shared machine out of the ratio;
on CPU one intra-op thread (the default) gives far steadier numbers on a busy machine.

    python benchmarks/compose_step.py [--anchor-hidden 256 --anchor-layers 12 --augment-hidden 128
        --augment-layers 8 --batch 4 --seq 128 --vocab 2048 --rounds 7 --device cpu --threads 1]

With ``--anchor smollm2`` (a ``graft zoo import`` name) or ``--anchor FOLDER`` the anchor is that real
model (its vocabulary replaces ``--vocab``; the augment stays a random Llama of the given shape over
it, e.g. the real-anchor CALM study's m_A: ``--augment-hidden 128 --augment-layers 16
--augment-intermediate 352``). ``--generate N`` also times greedy decoding of N tokens per prompt
(KV caches everywhere): the anchor alone (transformers' ``generate``) against the composition in
paper mode (the augment reads every generated token) and in encoder mode, as tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from graftkit.compose import bridge_param_count, compose


def llama(hidden: int, layers: int, heads: int, vocab: int, seed: int, intermediate: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or int(hidden * 8 / 3) // 16 * 16,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
    )
    return LlamaForCausalLM(config)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def real_anchor(name_or_folder: str) -> LlamaForCausalLM:
    """A zoo import (``smollm2``) or a model folder, loaded in float32."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from graftkit.zoo.smollm2 import IMPORTS

    folder = Path(name_or_folder) if Path(name_or_folder).is_dir() else IMPORTS.get(name_or_folder)()
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def decode_rates(anchor, model, ids, mask, new_tokens: int, autocast, device, rounds: int) -> dict[str, float]:
    """Generated tokens/s (median over ``rounds``) of greedy decoding: the anchor alone, paper and encoder mode."""
    from graftkit.compose.generate import generate

    def anchor_alone() -> None:
        anchor.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )

    runs = {
        "anchor alone": anchor_alone,
        "CALM paper mode": lambda: generate(model, ids, new_tokens, attention_mask=mask, mode="paper"),
        "CALM encoder mode": lambda: generate(model, ids, new_tokens, attention_mask=mask, mode="encoder"),
    }
    model.eval()
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad(), autocast:
        for fn in runs.values():  # warm-up
            timed(fn, device)
        for _ in range(rounds):
            for name, fn in runs.items():
                times[name].append(timed(fn, device))
    return {name: ids.shape[0] * new_tokens / statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchor", default=None, help="a zoo import name (smollm2) or a model folder")
    ap.add_argument("--augment-intermediate", type=int, default=0, help="0: hidden * 8/3")
    ap.add_argument("--generate", type=int, default=0, help="also time decoding of this many new tokens")
    ap.add_argument("--anchor-hidden", type=int, default=256)
    ap.add_argument("--anchor-layers", type=int, default=12)
    ap.add_argument("--anchor-heads", type=int, default=8)
    ap.add_argument("--augment-hidden", type=int, default=128)
    ap.add_argument("--augment-layers", type=int, default=8)
    ap.add_argument("--augment-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.anchor:
        anchor = real_anchor(args.anchor).to(device)
        args.vocab = anchor.config.vocab_size
        args.anchor_layers, args.anchor_hidden = anchor.config.num_hidden_layers, anchor.config.hidden_size
    else:
        anchor = llama(args.anchor_hidden, args.anchor_layers, args.anchor_heads, args.vocab, 0).to(device)
    shape = (args.augment_hidden, args.augment_layers, args.augment_heads, args.vocab, 1, args.augment_intermediate)
    augment = llama(*shape).to(device)
    model = compose(anchor, augment)
    with torch.no_grad():  # a trained-looking bridge: the zero output projection is not special-cased anyway
        for conn in model.bridge[0]:
            conn.o_proj.weight.normal_(0, 0.02)
    model.train()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(device)
    mask = torch.ones_like(ids)
    embed = anchor.get_input_embeddings()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    first = min(c.anchor_layer for c in model.connections[0])
    layers = model.anchor_stack.layers

    def anchor_step() -> None:
        # Benchmark-only hook: gradients start at the first connected layer, as in the composition.
        handle = layers[first].register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_())
        try:
            with autocast:
                loss = anchor(input_ids=ids, attention_mask=mask, labels=ids).loss
            loss.backward()
        finally:
            handle.remove()

    def anchor_full_step() -> None:
        with autocast:
            x = embed(ids).detach().requires_grad_()
            loss = anchor(inputs_embeds=x, attention_mask=mask, labels=ids).loss
        loss.backward()

    def anchor_weights_step() -> None:
        anchor.requires_grad_(True)
        with autocast:
            loss = anchor(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        anchor.zero_grad(set_to_none=True)
        anchor.requires_grad_(False)

    def augment_step() -> None:
        with torch.no_grad(), autocast:
            augment.base_model(input_ids=ids, attention_mask=mask)

    def composed_step() -> None:
        with autocast:
            loss = model(ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    steps = {
        "anchor fwd+bwd": anchor_step,
        "anchor fwd+bwd (to embeddings)": anchor_full_step,
        "anchor fwd+bwd (weights)": anchor_weights_step,
        "augment fwd": augment_step,
        "composition fwd+bwd": composed_step,
    }
    for fn in steps.values():  # warm-up
        timed(fn, device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            times[name].append(timed(fn, device))
    med = {name: statistics.median(t) for name, t in times.items()}
    parts = med["anchor fwd+bwd"] + med["augment fwd"]
    overhead = med["composition fwd+bwd"] / parts - 1

    count = bridge_param_count(model)
    wiring = [(c.augment_layer, c.anchor_layer) for c in model.connections[0]]
    print(f"device={device} threads={torch.get_num_threads()} bf16={args.bf16}")
    print(f"batch {args.batch}, seq {args.seq}, vocab {args.vocab}")
    print(f"anchor {args.anchor_layers} layers x {args.anchor_hidden}")
    print(f"augment {args.augment_layers} layers x {args.augment_hidden}")
    print(f"connections (augment layer, anchor layer) {wiring}")
    print(str(count))
    print(f"\n{'step':<32}{'median ms':>12}{'min ms':>10}")
    for name, t in times.items():
        print(f"{name:<32}{1e3 * med[name]:>12.2f}{1e3 * min(t):>10.2f}")
    print(f"{'anchor fwd+bwd + augment fwd':<32}{1e3 * parts:>12.2f}")
    full = med["composition fwd+bwd"] / (med["anchor fwd+bwd (to embeddings)"] + med["augment fwd"]) - 1
    print(f"\nbridge overhead: {100 * overhead:+.1f}% (target ≤ 15%)")
    print(f"vs backward to the embeddings: {100 * full:+.1f}%")
    if args.generate:
        rates = decode_rates(anchor, model, ids[:, :32], mask[:, :32], args.generate, autocast, device, args.rounds)
        print(f"\ndecoding {args.generate} new tokens after 32-token prompts, batch {args.batch} (greedy, cached)")
        for name, rate in rates.items():
            print(f"{name:<32}{rate:>10.1f} tokens/s")
        print(f"paper mode / anchor alone: {rates['CALM paper mode'] / rates['anchor alone']:.2f}")


if __name__ == "__main__":
    main()
