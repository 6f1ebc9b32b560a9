"""Does m_A's hidden state at a key carry the key's value where a CALM bridge could read it? (issue 14)

The real-anchor key-value study's bridge learns KV-Arithmetic over 20% of the keys and is scored on the
other 80%. For that to work, m_A's states at a key's tokens must hold the key's value in a form that one
mapping, learnt on the 20% keys, reads for every key. This probe fits a linear softmax classifier (value
1..max_value) on m_A's state at the key's last token, in layers ``--layers`` (the bridge's connections),
from KV-Arithmetic prompts whose probed operand is a composition key, and scores it on prompts whose probed
operand is a held-out key (the bridge's generalisation test), and on new prompts over the composition keys.
An upper bound fits on the held-out keys and scores the composition keys. Usage::

    python scripts/calm_value_probe.py M_A_FOLDER --seed 0 --n-keys 100 --max-value 9
"""

from __future__ import annotations

import argparse
import random

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from graftkit.zoo.tasks.calm_kv import KVConfig, KVTable
from graftkit.zoo.tasks.chat import chat_prompt

QUESTION = "Evaluate {expression}"
"""The study's question (``studies/calm_kv_real.yaml``), asked as one chat turn like every dataset there."""


class Sampler:
    """Three-operand ``+ −`` prompts with one probed operand drawn from a key pool; m_A's states there."""

    def __init__(self, model, tokenizer, table: KVTable, layers: list[int], seed: int) -> None:
        self.model, self.tokenizer, self.table, self.layers = model, tokenizer, table, layers
        self.rng = random.Random(seed)

    def one(self, pool: tuple[str, ...]) -> tuple[list[torch.Tensor], int]:
        keys = [self.rng.choice(list(self.table.values)) for _ in range(3)]
        probed = self.rng.randrange(3)
        keys[probed] = self.rng.choice(pool)
        ops = [self.rng.choice("+-") for _ in range(2)]
        parts = [keys[0], *(f" {op} {key}" for op, key in zip(ops, keys[1:], strict=True))]
        prompt = chat_prompt(QUESTION.format(expression="".join(parts)))
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        probed_end = prompt.index("".join(parts)) + len("".join(parts[: probed + 1]))
        upto = prompt[:probed_end]
        last = len(self.tokenizer(upto)["input_ids"]) - 1  # the probed key's last token
        with torch.no_grad():
            states = self.model(ids, output_hidden_states=True).hidden_states
        return [states[layer + 1][0, last] for layer in self.layers], self.table.values[keys[probed]] - 1

    def many(self, pool: tuple[str, ...], n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        rows = [self.one(pool) for _ in range(n)]
        per_layer = [torch.stack([states[i] for states, _ in rows]) for i in range(len(self.layers))]
        return per_layer, torch.tensor([value for _, value in rows])


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, classes: int) -> float:
    """Accuracy on ``x_test`` of a linear softmax classifier fitted on standardised ``x`` (N, H) → ``y`` (N,)."""
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0) + 1e-5
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(300):
        logits = ((x - mean) / std) @ weight + bias
        loss = torch.nn.functional.cross_entropy(logits, y) + 1e-3 * weight.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    predicted = (((x_test - mean) / std) @ weight + bias).argmax(1)
    return predicted.eq(y_test).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("m_a", help="m_A's model folder (a train_model unit's model/)")
    ap.add_argument("--seed", type=int, default=0, help="the study seed (its key table)")
    ap.add_argument("--n-keys", type=int, default=100)
    ap.add_argument("--max-value", type=int, default=9)
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 7, 11, 15])
    ap.add_argument("--n", type=int, default=600, help="training prompts per probe")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(args.m_a)
    model = AutoModelForCausalLM.from_pretrained(args.m_a).eval()
    config = KVConfig(
        seed=args.seed,
        n_keys=args.n_keys,
        max_value=args.max_value,
        min_terms=3,
        max_terms=3,
        ops="+-",
        train_fraction=0.2,
        unique_values=False,
    )
    table = KVTable(config)
    sample = Sampler(model, tokenizer, table, args.layers, seed=1)
    train, held_out, same = (
        sample.many(table.train_keys, args.n),
        sample.many(table.other_keys, args.n),
        sample.many(table.train_keys, args.n // 3),
    )
    reverse_train, reverse_test = sample.many(table.other_keys, args.n), sample.many(table.train_keys, args.n // 3)
    counts = torch.bincount(held_out[1], minlength=args.max_value)
    print(f"held-out keys, most common value: {counts.max().item() / len(held_out[1]):.2f} (chance)")
    print("layer | 20% keys -> held-out | 20% keys -> new prompts, same keys | 80% keys -> 20% keys")
    for i, layer in enumerate(args.layers):
        fit = [
            probe_accuracy(train[0][i], train[1], held_out[0][i], held_out[1], args.max_value),
            probe_accuracy(train[0][i], train[1], same[0][i], same[1], args.max_value),
            probe_accuracy(reverse_train[0][i], reverse_train[1], reverse_test[0][i], reverse_test[1], args.max_value),
        ]
        print(f"{layer:>5} | " + " | ".join(f"{a:.2f}" for a in fit))


if __name__ == "__main__":
    main()
