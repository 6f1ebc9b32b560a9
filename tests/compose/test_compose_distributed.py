"""`torchrun --nproc_per_node 2 … compose train` (gloo on CPU) trains the bridge one process would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import yaml
from safetensors.torch import load_file
from test_compose_train import recipe

from graftkit.compose.train import train_bridge


def test_two_processes_equal_one_process_with_accumulation(workspace):
    data = {"data": {"train": str(workspace / "train.jsonl")}}
    single = train_bridge(recipe(workspace, out="single", grad_accum=2) | data)
    two = recipe(workspace, out="two", grad_accum=1) | data
    (workspace / "two.yaml").write_text(yaml.safe_dump(two))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "graftkit", "compose", "train", str(workspace / "two.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("bridge written") == 1  # rank 0 reports, once
    a, b = load_file(str(single / "bridge.safetensors")), load_file(str(workspace / "two" / "bridge.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(b[name].abs().sum() > 0 for name in b if "o_proj" in name)  # it did train
    rows = [json.loads(line) for line in (workspace / "two" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in expected] == [2, 4]  # one writer
    for got, want in zip(rows, expected, strict=True):
        assert abs(got["train_loss"] - want["train_loss"]) < 1e-4  # the whole step's loss
