"""LoRA experts against full experts: the same task-arithmetic merge, read from 2 adapters or 2 checkpoints.

Writes a Llama-shaped base (default hidden 768, 8 layers, intermediate 2048, vocabulary 8192: about
250 MB in float32), two full experts of the same size (base + noise) and two PEFT LoRA adapters
(rank 16 on every linear layer of every block, random factors, as `save_pretrained` names them),
then times ``graftkit.merge`` (task_arithmetic, 1 thread, no progress bar) on each pair: median of
``--repeat`` runs after one untimed run that warms the page cache. A LoRA expert is read as
base + ΔW, ΔW = scale · B A computed per tensor; the adapter files are a few MB. ``--record``
appends a section to ``benchmarks/RESULTS.md``.

    python benchmarks/lora_merge.py [--hidden 768] [--layers 8] [--rank 16] [--record --date 2026-12-03]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from gguf_write import llama_entries  # noqa: E402 - the same Llama shapes

HERE = Path(__file__).resolve().parent
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_models(root: Path, entries, config: dict, rank: int) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    base = {name: torch.randn(shape, generator=gen) * 0.02 for name, shape in entries}
    paths = {"base": root / "base"}
    _save_model(paths["base"], base, config)
    for i in (1, 2):
        full = {name: w + 0.001 * torch.randn(w.shape, generator=gen) for name, w in base.items()}
        paths[f"full{i}"] = root / f"full{i}"
        _save_model(paths[f"full{i}"], full, config)
        factors = {}
        for name, w in base.items():
            if name.removesuffix(".weight").rsplit(".", 1)[-1] in MODULES:
                stem = "base_model.model." + name.removesuffix(".weight")
                factors[f"{stem}.lora_A.weight"] = torch.randn(rank, w.shape[1], generator=gen) * 0.01
                factors[f"{stem}.lora_B.weight"] = torch.randn(w.shape[0], rank, generator=gen) * 0.01
        paths[f"lora{i}"] = root / f"lora{i}"
        paths[f"lora{i}"].mkdir()
        save_file(factors, str(paths[f"lora{i}"] / "adapter_model.safetensors"), metadata={"format": "pt"})
        adapter = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(MODULES)}
        (paths[f"lora{i}"] / "adapter_config.json").write_text(json.dumps(adapter))
    return paths


def _save_model(folder: Path, state: dict, config: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))


def time_merge(paths: dict[str, Path], kind: str, root: Path) -> float:
    import graftkit

    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(paths["base"]),
        "models": [{"model": str(paths[f"{kind}{i}"]), "parameters": {"weight": 0.5}} for i in (1, 2)],
    }
    out = root / f"merged-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    graftkit.merge(recipe, out, progress=False, threads=1)
    return time.perf_counter() - start


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


def main() -> None:
    entries = llama_entries(ARGS.hidden, ARGS.layers, ARGS.inter, ARGS.vocab)
    heads = ARGS.hidden // 64
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": ARGS.hidden,
        "intermediate_size": ARGS.inter,
        "num_hidden_layers": ARGS.layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads // 4,
        "vocab_size": ARGS.vocab,
        "tie_word_embeddings": False,
        "dtype": "float32",
    }
    with tempfile.TemporaryDirectory(prefix="graft-lora-bench-") as tmp:
        root = Path(tmp)
        paths = write_models(root, entries, config, ARGS.rank)
        sizes = {k: folder_mb(p) for k, p in paths.items()}
        results = {}
        for kind in ("full", "lora"):
            time_merge(paths, kind, root)  # warm the page cache
            runs = sorted(time_merge(paths, kind, root) for _ in range(ARGS.repeat))
            results[kind] = runs[len(runs) // 2]
            print(f"{kind}: {results[kind]:.2f} s (runs {', '.join(f'{r:.2f}' for r in runs)})", flush=True)
    load = os.getloadavg()[0]
    print(f"base {sizes['base']:.0f} MB, full expert {sizes['full1']:.0f} MB, adapter {sizes['lora1']:.1f} MB")
    if ARGS.record:
        record(sizes, results, load)


def record(sizes: dict[str, float], results: dict[str, float], load: float) -> None:
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    shape = f"hidden {ARGS.hidden}, {ARGS.layers} layers, intermediate {ARGS.inter}, vocabulary {ARGS.vocab}"
    lines = [
        f"\n## lora_merge — {ARGS.date}\n",
        f"{machine}; `python benchmarks/lora_merge.py` (`graftkit.merge`, task_arithmetic, 1 thread, median "
        f"of {ARGS.repeat} warm runs). A Llama-shaped base, {shape}: {sizes['base']:.0f} MB in float32; "
        f"2 experts given either as full checkpoints ({sizes['full1']:.0f} MB each) or as PEFT LoRA adapters "
        f"of rank {ARGS.rank} on all 7 linear layers of every block ({sizes['lora1']:.1f} MB each). "
        f"Load average {load:.1f} at the end.\n",
        "| experts | wall s | expert files MB (both) | vs full |",
        "| --- | --- | --- | --- |",
        f"| 2 full checkpoints | {results['full']:.2f} | {2 * sizes['full1']:.0f} | 1.00x |",
        f"| 2 LoRA adapters | {results['lora']:.2f} | {2 * sizes['lora1']:.1f} | "
        f"{results['lora'] / results['full']:.2f}x |",
    ]
    with open(HERE / "RESULTS.md", "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--inter", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per kind; the median is reported")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ARGS = parser.parse_args()
    main()
