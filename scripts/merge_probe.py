"""Why does a merge of experts lose their skills: dilution or interference? (issue 12, run by hand)

Loads a base and its experts once, then scores in-memory merges ``base + Σ c_i δ_i`` (δ_i = expert_i −
base) on the experts' own tasks, to separate two causes of a failed average:

- **dilution**: one expert alone at c = 1/N (its share in an average of N) already loses its task;
- **interference**: its task survives at c = 1/N alone, or at c = 1 with the others added at 1/N, but
  not in the average.

It also prints the cosine of the experts' deltas per module kind, and a few outputs of each model.
The results are written as JSON beside ``--out``. Usage::

    python scripts/merge_probe.py BASE chat_addition=EXPERT_DIR chat_reversal=EXPERT_DIR ... -o probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from graftkit.evaluate.generate import exact_match
from graftkit.evaluate.runner import get_task

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "norm")


class Probe:
    """A base model whose weights are set to ``base + Σ c_i δ_i`` before each scoring."""

    def __init__(self, base_dir: Path, experts: dict[str, Path], n: int) -> None:
        self.tok = AutoTokenizer.from_pretrained(base_dir)
        self.model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        self.base = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.deltas = {}
        for task, folder in experts.items():
            weights = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()
            self.deltas[task] = {k: v - self.base[k] for k, v in weights.items()}
        self.n = n

    def cosines(self) -> dict[str, dict[str, float]]:
        """Cosine of every pair of experts' deltas, over all tensors of each module kind."""
        tasks, out = list(self.deltas), {}
        for kind in KINDS:
            names = [k for k in self.base if kind in k]
            vec = {t: torch.cat([self.deltas[t][k].flatten() for k in names]) for t in tasks}
            pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
            out[kind] = {f"{a}|{b}": float(torch.cosine_similarity(vec[a], vec[b], dim=0)) for a, b in pairs}
        return out

    def score(self, coeffs: dict[str, float], tasks: list[str], show: int = 0) -> dict[str, float]:
        """Exact match (bf16 autocast, as the study scores) of ``base + Σ coeffs[t] δ_t`` on ``tasks``."""
        state = {k: v + sum(c * self.deltas[t][k] for t, c in coeffs.items()) for k, v in self.base.items()}
        self.model.load_state_dict(state)
        scores = {}
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            for name in tasks:
                task = get_task(name)
                examples = task.examples("test", self.n, seed=0)
                preds = exact_match(
                    self.model, self.tok, examples, batch_size=64, prepend_bos=False, margin=task.answer_margin
                )
                right = [task.matches(p.output, p.answer) for p in preds]
                scores[name] = sum(right) / len(right)
                for p in preds[:show]:
                    print(f"   [{name}] want {p.answer!r} got {p.output!r}")
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("experts", nargs="+", help="TASK=EXPERT_FOLDER, one per expert")
    parser.add_argument("-o", "--out", type=Path, default=Path("merge_probe.json"))
    parser.add_argument("-n", type=int, default=32, help="test prompts per task")
    args = parser.parse_args()
    torch.set_num_threads(2)
    experts = {t: Path(p) for t, p in (e.split("=", 1) for e in args.experts)}
    probe, tasks, k = Probe(args.base, experts, args.n), list(experts), len(experts)
    report: dict[str, object] = {"n": args.n, "cosines": probe.cosines()}

    def run(label: str, coeffs: dict[str, float], on: list[str], show: int = 0) -> None:
        start = time.time()
        report[label] = probe.score(coeffs, on, show)
        print(label, {t: round(s, 2) for t, s in report[label].items()}, f"{time.time() - start:.0f} s", flush=True)

    run("base", {}, tasks, show=2)
    for t in tasks:
        run(f"expert:{t}", {t: 1.0}, tasks, show=1)
    run("average", {t: 1 / k for t in tasks}, tasks, show=4)
    run("sum@0.5", {t: 0.5 for t in tasks}, tasks, show=2)
    run("sum@1", {t: 1.0 for t in tasks}, tasks, show=2)
    for t in tasks:
        for c in (1 / k, 0.5):
            run(f"alone@{c:.2f}:{t}", {t: c}, [t])
        run(f"own@1+others@{1 / k:.2f}:{t}", {u: 1.0 if u == t else 1 / k for u in tasks}, [t])
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
