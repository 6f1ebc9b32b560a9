"""`make demo`: merge experts and report what came out.

With the model zoo available this trains (or reuses) a small zoo, merges four experts with four
methods and scores held-in and held-out tasks; see :func:`run_demo`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def run_demo(workdir: Path | None = None) -> None:
    """Run the demo in ``workdir`` (a temporary folder by default)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="graft-demo-") as tmp:
            return run_demo(Path(tmp))
    return perturbed_demo(workdir)


def perturbed_demo(workdir: Path) -> None:
    """A tiny Llama base and three perturbed experts, merged with three methods."""
    import torch
    from rich.console import Console
    from rich.table import Table
    from transformers import LlamaConfig, LlamaForCausalLM

    import graftkit

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128)
    base = LlamaForCausalLM(config)
    base.save_pretrained(workdir / "base")
    experts = []
    for i in range(3):
        expert = LlamaForCausalLM(config)
        expert.load_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in base.state_dict().items()})
        expert.save_pretrained(workdir / f"expert{i}")
        experts.append(expert)
    table = Table(title="demo: 3 perturbed experts of a tiny Llama, merged")
    for column in ("method", "mean |θ − base|", "mean |θ − expert0|"):
        table.add_column(column)
    for method, params in (("linear", {}), ("ties", {"density": 0.5}), ("dare_ties", {"density": 0.5})):
        recipe = {
            "merge_method": method,
            "base_model": str(workdir / "base"),
            "models": [{"model": str(workdir / f"expert{i}"), "parameters": params} for i in range(3)],
            "seed": 0,
        }
        out = graftkit.merge(recipe, workdir / f"merged-{method}", progress=False)
        merged = LlamaForCausalLM.from_pretrained(out)
        merged_sd, base_sd, e0 = merged.state_dict(), base.state_dict(), experts[0].state_dict()
        to_base = torch.stack([(merged_sd[k] - base_sd[k]).abs().mean() for k in base_sd]).mean()
        to_e0 = torch.stack([(merged_sd[k] - e0[k]).abs().mean() for k in base_sd]).mean()
        table.add_row(method, f"{to_base:.5f}", f"{to_e0:.5f}")
    Console().print(table)
