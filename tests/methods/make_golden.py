"""Regenerate ``golden.json``: every registered method on fixed, seeded inputs.

Run from the repository root after an intended numeric change, and review the diff:

    .venv/bin/python tests/methods/make_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import graftkit.methods  # noqa: F401  (fills METHODS)
from graftkit.methods import METHODS, expert_seed, run_method

GOLDEN = Path(__file__).with_name("golden.json")
TENSOR_NAME = "model.layers.0.mlp.up_proj.weight"

# (case id, method, number of experts, params, dare pre-step)
CASES: list[tuple[str, str, int, dict[str, Any], dict[str, Any] | None]] = [
    ("linear", "linear", 3, {}, None),
    ("linear_sum", "linear", 3, {"normalize": False}, None),
    ("slerp", "slerp", 2, {"t": 0.3}, None),
    ("task_arithmetic", "task_arithmetic", 3, {"lambda": 0.8}, None),
    ("task_arithmetic_dare", "task_arithmetic", 3, {}, {"density": 0.5, "rescale": "paper"}),
    ("ties", "ties", 3, {"density": 0.3, "lambda": 1.2}, None),
    ("dare_linear", "dare_linear", 3, {"density": 0.4}, None),
    ("dare_ties", "dare_ties", 3, {"density": (0.3, 0.5, 0.7), "rescale": "l1"}, None),
    ("magnitude_prune", "magnitude_prune", 3, {"density": 0.25, "rescale": "paper"}, None),
    ("breadcrumbs", "breadcrumbs", 3, {"density": 0.5, "gamma": 0.1}, None),
    ("breadcrumbs_ties", "breadcrumbs_ties", 3, {"density": 0.5, "gamma": 0.1}, None),
    ("della", "della", 3, {"density": 0.4, "epsilon": 0.2}, None),
    ("della_linear", "della_linear", 3, {"density": 0.6, "epsilon": 0.1, "lambda": 0.9}, None),
    ("model_stock", "model_stock", 3, {}, None),
    ("passthrough", "passthrough", 1, {"scale": 0.7}, None),
    ("fisher", "fisher", 3, {}, None),
    ("fisher_dare", "fisher", 3, {}, {"density": 0.5, "rescale": "paper"}),
    ("regmean", "regmean", 3, {}, None),
    ("regmean_alpha_0_5", "regmean", 3, {"alpha": 0.5}, None),
    ("regmean_dare", "regmean", 3, {"alpha": 1.0}, {"density": 0.6, "rescale": "paper"}),
]


def inputs() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A (4, 6) base and three experts whose deltas share a direction plus noise."""
    gen = torch.Generator().manual_seed(2024)
    base = torch.randn(4, 6, generator=gen)
    shared = torch.randn(4, 6, generator=gen)
    experts = [base + 0.5 * shared + 0.3 * torch.randn(4, 6, generator=gen) for _ in range(3)]
    return base, experts


def statistics(kind: str | None, n: int) -> list[torch.Tensor] | None:
    """Fixed per-expert statistics of the (4, 6) inputs: Fishers (4, 6), or Grams (6, 6) of 10 rows."""
    if kind is None:
        return None
    gen = torch.Generator().manual_seed(2025)
    if kind == "fisher":
        return [torch.rand(4, 6, generator=gen).square() for _ in range(n)]
    xs = [torch.randn(10, 6, generator=gen) for _ in range(n)]
    return [x.T @ x for x in xs]


def compute(method: str, n: int, params: dict[str, Any], dare: dict[str, Any] | None) -> torch.Tensor:
    base, experts = inputs()
    return run_method(
        method,
        experts[:n],
        base=base,
        weights=(1.0, 0.5, 2.0)[:n],
        seeds=tuple(expert_seed(7, i, TENSOR_NAME) for i in range(n)),
        params=params,
        dare=dare,
        stats=statistics(METHODS.get(method).needs_stats, n),
    )


def main() -> None:
    golden = {case: compute(method, n, p, dare).tolist() for case, method, n, p, dare in CASES}
    lines = [
        f"  {json.dumps(case)}: [\n" + ",\n".join(f"    {json.dumps(row)}" for row in rows) + "\n  ]"
        for case, rows in golden.items()
    ]
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {len(golden)} cases to {GOLDEN}")


if __name__ == "__main__":
    main()
