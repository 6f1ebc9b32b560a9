"""Peak memory of the data-aware merges: `graft merge` with fisher and regmean vs linear.

Generates, once under ``benchmarks/_work``, two Llama-shaped experts (default hidden 1024, 8
layers, intermediate 2816, vocabulary 8192: about 480 MB each in float32) and a statistics folder
per expert in the layout ``graft stats`` writes: a Fisher per tensor (random squares) and a Gram
per linear weight (``AᵀA`` of 32 random rows plus a ridge: positive definite, so regmean solves
every layer). The statistics are synthetic because only the merge's memory and time are measured
here; ``graft stats`` on a model this size would take far longer than the merge.

Each merge runs as a fresh ``python -m graftkit merge --threads 1`` process (torch, OpenMP and
MKL held to one thread); its peak RSS comes from ``wait4``. The inputs are generated in a child
process too, so that this process stays small: a child's peak RSS counts the parent's resident
memory it was forked from. ``--record`` appends a section to ``benchmarks/RESULTS.md``.

    python benchmarks/stats_merge_memory.py [--hidden 1024] [--layers 8] [--record --date 2026-12-02]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "stats_merge"
METHODS = ("linear", "fisher", "regmean")


def llama_shapes(hidden: int, layers: int, inter: int, vocab: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "lm_head.weight": (vocab, hidden),
    }
    shapes["model.norm.weight"] = (hidden,)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{name}.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    return shapes


def generate(root: Path, shapes: dict[str, tuple[int, ...]], n_experts: int) -> tuple[list[Path], list[Path]]:
    import torch
    from safetensors.torch import save_file

    from graftkit.io import write_stats_folder

    torch.set_num_threads(1)
    hidden = shapes["model.norm.weight"][0]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": sum(".q_proj" in k for k in shapes),
        "intermediate_size": shapes["model.layers.0.mlp.up_proj.weight"][0],
        "vocab_size": shapes["model.embed_tokens.weight"][0],
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    experts, stats = [], []
    for idx in range(n_experts):
        folder, stat_dir = root / f"expert{idx}", root / f"stats{idx}"
        experts.append(folder)
        stats.append(stat_dir)
        if (stat_dir / "stats.json").exists():
            continue
        gen = torch.Generator().manual_seed(idx)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: torch.randn(shape, generator=gen) * 0.02 for name, shape in shapes.items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(config))
        fisher = {name: torch.rand(shape, generator=gen).square_() for name, shape in shapes.items()}
        grams = {}
        for name, shape in shapes.items():
            if len(shape) == 2 and "embed" not in name:
                a = torch.randn(32, shape[1], generator=gen)  # (32, in)
                gram = a.T @ a  # (in, in), rank 32
                gram.diagonal().add_(1.0)  # ridge: positive definite
                grams[name] = gram
        info = {"model": str(folder), "synthetic": True, "data": {"note": "random statistics for a memory benchmark"}}
        write_stats_folder(stat_dir, {"fisher": fisher, "regmean": grams}, info, overwrite=True)
        print(f"generated {folder} and {stat_dir}", flush=True)
    return experts, stats


def write_recipe(method: str, experts: list[Path], stats: list[Path]) -> Path:
    import yaml

    models = [
        {"model": str(e)} | ({"stats": str(s)} if method != "linear" else {})
        for e, s in zip(experts, stats, strict=True)
    ]
    path = WORK / f"recipe-{method}.yaml"
    path.write_text(yaml.safe_dump({"merge_method": method, "models": models}))
    return path


def measure(method: str, experts: list[Path], stats: list[Path]) -> dict:
    out = WORK / f"out-{method}"
    recipe = write_recipe(method, experts, stats)
    cmd = [sys.executable, "-m", "graftkit", "merge", str(recipe), "-o", str(out), "--overwrite", "--no-progress"]
    cmd += ["--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = WORK / f"log-{method}.txt"
    with open(log, "w") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{method} failed:\n{log.read_text()[-3000:]}")
    files = [e / "model.safetensors" for e in experts]
    if method != "linear":
        files += [s / f"{method}.safetensors" for s in stats]
    read_gb = sum(f.stat().st_size for f in files) / 1e9
    shutil.rmtree(out)
    return {
        "method": method,
        "wall_s": round(wall, 2),
        "input_gb": round(read_gb, 2),
        "peak_rss_gib": usage.ru_maxrss / 2**20,
    }


def main() -> None:
    shapes = llama_shapes(ARGS.hidden, ARGS.layers, ARGS.inter, ARGS.vocab)
    model_mb = sum(4 * _numel(s) for s in shapes.values()) / 1e6
    largest_mb = max(4 * _numel(s) for s in shapes.values()) / 1e6
    root = WORK / f"h{ARGS.hidden}-l{ARGS.layers}"
    if ARGS.generate:
        generate(root, shapes, ARGS.experts)
        return
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--generate"], check=True)
    experts = [root / f"expert{i}" for i in range(ARGS.experts)]
    stats = [root / f"stats{i}" for i in range(ARGS.experts)]
    rows = [measure(m, experts, stats) for m in METHODS]
    linear_rss = rows[0]["peak_rss_gib"]
    header = (
        "| method | wall s | input GB (weights + stats) | peak RSS GiB | vs linear |\n| --- | --- | --- | --- | --- |"
    )
    lines = [
        f"| {r['method']} | {r['wall_s']} | {r['input_gb']} | {r['peak_rss_gib']:.2f} | "
        f"{r['peak_rss_gib'] / linear_rss:.2f}x |"
        for r in rows
    ]
    table = "\n".join([header, *lines])
    print(table)
    if ARGS.record:
        cpu = platform.processor() or platform.machine()
        machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
        with open(HERE / "RESULTS.md", "a") as f:
            f.write(
                f"\n## stats_merge_memory — {ARGS.date}\n\n{machine}; `python benchmarks/stats_merge_memory.py` "
                f"(each merge a fresh `graft merge --threads 1` process). {ARGS.experts} Llama-shaped experts, hidden "
                f"{ARGS.hidden}, {ARGS.layers} layers, intermediate {ARGS.inter}, vocabulary {ARGS.vocab}: "
                f"{model_mb:.0f} MB each in float32 (largest tensor {largest_mb:.0f} MB), with synthetic statistics "
                f"in the `graft stats` layout (a Fisher per tensor, a Gram per linear weight).\n\n{table}\n"
            )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--inter", type=int, default=2816)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--experts", type=int, default=2)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    main()
