"""Merge throughput: `graft merge` vs a read-average-write floor, on Llama-shaped checkpoints.

Generates a base and 4 experts (default about 2 GB each in float32) once under
``benchmarks/_work``, warms the page cache, then times, each in a fresh process:
the floor (read every input tensor once, average, write), and ``graft merge`` with linear,
task_arithmetic, ties and dare_ties, and linear with ``--durable`` (fsync before the rename);
``--methods ties_model`` times TIES with ``trim_scope: model`` (not in the default set).
Linear reads the 4 experts only (it needs no base); the others read all 5 models. Reports
wall time, GB/s of input and peak RSS, and appends
a section to ``benchmarks/RESULTS.md`` with ``--record``.

    python benchmarks/merge_throughput.py [--gb 2] [--experts 4] [--methods linear,ties] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"


def llama_shapes(target_gb: float, hidden: int = 2048, inter: int = 5504, vocab: int = 32000) -> dict[str, tuple]:
    """Tensor shapes of a Llama-style model of about ``target_gb`` GB in float32."""
    shapes: dict[str, tuple] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "lm_head.weight": (vocab, hidden),
    }
    shapes["model.norm.weight"] = (hidden,)
    per_layer = 4 * hidden * hidden + 3 * hidden * inter
    layers = max(1, round((target_gb * 1e9 / 4 - 2 * vocab * hidden) / per_layer))
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


def generate(root: Path, gb: float, experts: int) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    shapes = llama_shapes(gb)
    folders = [root / "base"] + [root / f"expert{i}" for i in range(experts)]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "num_hidden_layers": sum(".q_proj" in k for k in shapes),
        "torch_dtype": "float32",
    }
    for idx, folder in enumerate(folders):
        if (folder / "model.safetensors").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        gen = torch.Generator().manual_seed(idx)
        state = {}
        for name, shape in shapes.items():
            base = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode()))) * 0.02
            state[name] = base if idx == 0 else base + 0.001 * torch.randn(shape, generator=gen)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(config))
        print(f"generated {folder}", flush=True)
    return folders


def warm(folders: list[Path]) -> None:
    for folder in folders:
        with open(folder / "model.safetensors", "rb") as f:
            while f.read(1 << 26):
                pass


def child_floor(folders: list[Path], out: Path) -> None:
    """Read every input tensor once, average, write: the least any streaming merge can do.

    The fastest read graftkit has (a per-tensor copy-on-write memory map), an in-place average,
    and the sharded writer with no journal, no checks and no read-ahead: one tensor at a time.
    """
    from graftkit.io import Checkpoint, ShardedWriter

    checkpoints = [Checkpoint.open(f) for f in folders]
    infos = checkpoints[0].tensors
    entries = [(name, info.shape, info.dtype) for name, info in infos.items()]
    with ShardedWriter(out, entries, 5 * 10**9) as writer:
        for name in infos:
            acc = checkpoints[0].read_mapped(name) + checkpoints[1].read_mapped(name)
            for checkpoint in checkpoints[2:]:
                acc.add_(checkpoint.read_mapped(name))
            writer.write(name, acc.div_(len(checkpoints)))


def write_recipe(method: str, folders: list[Path]) -> Path:
    import yaml

    params = {"ties": {"density": 0.2}, "dare_ties": {"density": 0.2}, "ties_model": {"density": 0.2}}.get(method, {})
    recipe = {
        "merge_method": "ties" if method == "ties_model" else method,  # ties_model: TIES, trim_scope model
        "base_model": str(folders[0]),
        "seed": 0,
        "models": [{"model": str(f), "parameters": params} for f in folders[1:]],
    }
    if method == "ties_model":
        recipe["parameters"] = {"trim_scope": "model"}
    path = WORK / f"recipe-{method}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def measure(kind: str, folders: list[Path]) -> dict:
    """Run one kind in a fresh process: ``graft merge`` exactly as a user types it, or the floor."""
    out = WORK / f"out-{kind}"
    if kind == "floor":
        cmd = [sys.executable, __file__, "--child", kind, "--gb", str(ARGS.gb), "--experts", str(ARGS.experts)]
    else:
        method, *flags = kind.split("+")  # "linear+durable" runs `graft merge --durable`
        recipe = write_recipe(method, folders)
        cmd = [sys.executable, "-m", "graftkit", "merge", str(recipe), "-o", str(out), "--overwrite", "--no-progress"]
        cmd += [f"--{flag}" for flag in flags]
    log = WORK / f"log-{kind}.txt"
    warm(folders)  # again before every run: this machine's kdamond reclaims cold page cache in seconds
    with open(log, "w") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} failed:\n{log.read_text()[-3000:]}")
    inputs = folders[1:] if kind.startswith("linear") else folders
    read_gb = sum((f / "model.safetensors").stat().st_size for f in inputs)
    subprocess.run(["rm", "-rf", str(out)])
    return {
        "kind": kind,
        "wall_s": round(wall, 2),
        "input_gb": round(read_gb / 1e9, 2),
        "gb_per_s": round(read_gb / 1e9 / wall, 2),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
    }


def main() -> None:
    folders = generate(WORK / f"llama-{ARGS.gb}gb", ARGS.gb, ARGS.experts)
    if ARGS.child:
        child_floor(folders, WORK / f"out-{ARGS.child}")
        return
    rows = [measure(kind, folders) for kind in ["floor", *ARGS.methods.split(",")]]
    header = "| run | wall s | input GB | GB/s | peak RSS GiB |\n| --- | --- | --- | --- | --- |"
    table = "\n".join(
        [header]
        + [f"| {r['kind']} | {r['wall_s']} | {r['input_gb']} | {r['gb_per_s']} | {r['peak_rss_gib']} |" for r in rows]
    )
    print(table)
    if ARGS.record:
        cpu = platform.processor() or platform.machine()
        machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
        with open(HERE / "RESULTS.md", "a") as f:
            f.write(
                f"\n## merge_throughput — {time.strftime('%Y-%m-%d')}\n\n{machine}; base + {ARGS.experts} experts of "
                f"{ARGS.gb} GB (float32, Llama-shaped), warm page cache, each run a fresh process.\n\n{table}\n"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--methods", default="linear,task_arithmetic,ties,dare_ties,linear+durable")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    main()
