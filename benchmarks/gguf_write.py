"""GGUF write throughput: :class:`graftkit.io.GGUFFileWriter` on a Llama-shaped model, one thread.

Builds the model's tensors on the fly (default hidden 1024, 8 layers, intermediate 2816,
vocabulary 8192: about 480 MB in float32), one at a time from a seeded generator, and writes them
as GGUF in each ``--types`` (f16, q8_0 by default). Only the writer is timed (header, then each
``write``: Q/K row reorder, cast or quantize, append); generating a tensor is not. Throughput is
float32 input MB per second (median of ``--repeat`` runs); the file size is reported beside it.
The file goes to the page cache: the disk's own write speed is not part of the number. ``--record`` appends a section
to ``benchmarks/RESULTS.md``.

    python benchmarks/gguf_write.py [--hidden 1024] [--layers 8] [--types f16,q8_0] [--record --date 2026-12-02]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "gguf_write"


def llama_entries(hidden: int, layers: int, inter: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    kv = hidden // 4  # 4 query heads per key/value head
    entries: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        entries += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv, hidden)),
            (p + "self_attn.v_proj.weight", (kv, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
        ]
    return entries + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def run(gguf_type: str, entries, config) -> dict[str, float]:
    import torch

    from graftkit.io import GGUFFileWriter

    path = WORK / f"model-{gguf_type}.gguf"
    gen = torch.Generator().manual_seed(0)
    spent = 0.0
    start = time.perf_counter()
    writer = GGUFFileWriter(path, [(n, s, torch.float32) for n, s in entries], config, gguf_type)
    spent += time.perf_counter() - start
    with writer:
        for name, shape in entries:
            tensor = torch.randn(shape, generator=gen) * 0.02
            start = time.perf_counter()
            writer.write(name, tensor)
            spent += time.perf_counter() - start
        start = time.perf_counter()
    spent += time.perf_counter() - start  # finish: close the file
    in_mb = sum(4 * _numel(s) for _, s in entries) / 1e6
    return {"seconds": spent, "in_mb": in_mb, "out_mb": path.stat().st_size / 1e6, "mb_s": in_mb / spent}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def main() -> None:
    import torch

    torch.set_num_threads(1)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    entries = llama_entries(ARGS.hidden, ARGS.layers, ARGS.inter, ARGS.vocab)
    config = {
        "model_type": "llama",
        "hidden_size": ARGS.hidden,
        "intermediate_size": ARGS.inter,
        "num_hidden_layers": ARGS.layers,
        "num_attention_heads": ARGS.heads,
        "num_key_value_heads": ARGS.heads // 4,
        "vocab_size": ARGS.vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
    }
    rows = []
    for gguf_type in ARGS.types.split(","):
        runs = sorted((run(gguf_type, entries, config) for _ in range(ARGS.repeat)), key=lambda r: r["seconds"])
        result = runs[len(runs) // 2]  # the median run
        rows.append((gguf_type, result))
        print(
            f"{gguf_type}: {result['seconds']:.2f} s, {result['in_mb']:.0f} MB float32 in, "
            f"{result['out_mb']:.0f} MB file, {result['mb_s']:.0f} MB/s",
            flush=True,
        )
    shutil.rmtree(WORK, ignore_errors=True)
    if ARGS.record:
        cpu = platform.processor() or platform.machine()
        machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
        shape = f"hidden {ARGS.hidden}, {ARGS.layers} layers, intermediate {ARGS.inter}, vocabulary {ARGS.vocab}"
        lines = [
            f"\n## gguf_write — {ARGS.date}\n",
            f"{machine}; `python benchmarks/gguf_write.py` (1 thread). A Llama-shaped model, {shape}: "
            f"{rows[0][1]['in_mb']:.0f} MB in float32, written by `GGUFFileWriter` tensor by tensor "
            f"(median of {ARGS.repeat} runs; into the page cache).\n",
            "| --gguf-type | wall s | float32 MB in | file MB | MB/s (float32 in) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for gguf_type, r in rows:
            lines.append(
                f"| {gguf_type} | {r['seconds']:.2f} | {r['in_mb']:.0f} | {r['out_mb']:.0f} | {r['mb_s']:.0f} |"
            )
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--inter", type=int, default=2816)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--types", default="f16,q8_0")
    parser.add_argument("--repeat", type=int, default=3, help="runs per type; the median is reported")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ARGS = parser.parse_args()
    main()
