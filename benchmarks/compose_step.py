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
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from graftkit.compose import bridge_param_count, compose


def llama(hidden: int, layers: int, heads: int, vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 8 / 3) // 16 * 16,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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

    anchor = llama(args.anchor_hidden, args.anchor_layers, args.anchor_heads, args.vocab, 0).to(device)
    augment = llama(args.augment_hidden, args.augment_layers, args.augment_heads, args.vocab, 1).to(device)
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


if __name__ == "__main__":
    main()
