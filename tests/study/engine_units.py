"""Study unit functions for the engine tests, importable by module path (also in subprocesses and Ray workers).

Pytest puts ``tests/study`` on ``sys.path`` (the folder has no ``__init__.py``), so these are
``"engine_units:<name>"``; child processes get the folder through ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def counted(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Double ``x``; count calls in the file ``inputs["counter"]`` and write ``scores.json``."""
    counter = Path(inputs["counter"])
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    (out_dir / "scores.json").write_text(json.dumps({"x": inputs["x"]}))
    return {"double": 2 * inputs["x"]}


def stepped(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Count to ``inputs["steps"]`` with a checkpoint per step in ``work_dir``.

    The first start raises after step ``inputs["fail_after"]`` (a simulated kill). With
    ``$ENGINE_TEST_PAUSE`` set, each step after the first sleeps that many seconds, so a test can
    kill the process once the first checkpoint is written.
    """
    ckpt = work_dir / "ckpt.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"done": 0, "starts": 0}
    state["starts"] += 1
    resumed_from = state["done"]
    pause = float(os.environ.get("ENGINE_TEST_PAUSE", "0"))
    for step in range(resumed_from, inputs["steps"]):
        if step > 0:
            time.sleep(pause)
        state["done"] = step + 1
        ckpt.write_text(json.dumps(state))
        if state["starts"] == 1 and state["done"] == inputs.get("fail_after"):
            raise RuntimeError("simulated kill")
    return {"done": state["done"], "starts": state["starts"], "resumed_from": resumed_from}


def square_with_pid(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Square ``x``; record the running process's id in ``pid.txt`` (kept out of the result)."""
    (out_dir / "pid.txt").write_text(str(os.getpid()))
    return {"x": inputs["x"], "square": inputs["x"] ** 2}
