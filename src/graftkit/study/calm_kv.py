"""The CALM key-value study (Bansal et al. 2024, §4.1, Table 1 and the Table 5 ablations), scaled to a CPU.

``m_A`` (small) learns KV-Substitution over every key, ``m_B`` (larger) learns Numeric-Arithmetic, and a
bridge from ``m_A`` into ``m_B`` is trained on KV-Arithmetic over the 20% "train" keys only — the
paper's reading of the composition data (arithmetic, not substitution). All three models and the
composition are scored on the three datasets, KV-Arithmetic also on the held-out 80% of the keys.

Ablations: ``m_A`` swapped for a random-weight model and for a same-size model pretrained on text (never
on the keys); encoder-mode decoding of the main bridge; LoRA on ``m_B`` with about the bridge's number of
trainable parameters, the same data, batches and steps.

Every model, bridge and the LoRA baseline is a study-engine unit (:mod:`graftkit.study.calm_kv_stages`), run
by a local or Ray backend into a :class:`~graftkit.study.engine.UnitStore`, so a rerun only evaluates.
"""

from __future__ import annotations

import json
import time
from typing import Any

from graftkit.study.calm_kv_data import EVAL_SETS, composition_rows, distinct_examples, keys_in, study_tasks
from graftkit.study.calm_kv_real_settings import CalmKVRealSettings
from graftkit.study.calm_kv_settings import CalmKVSettings, load_settings
from graftkit.study.calm_kv_stages import (
    BRIDGES,
    LORA_TARGETS,
    Log,
    build_bridges,
    build_lora,
    build_models,
    lora_rank,
    stage_seconds,
)
from graftkit.study.engine import Backend, LocalBackend, UnitStore
from graftkit.zoo.tasks.calm_kv import KVTable

__all__ = [  # the whole study, from one module
    "BRIDGES",
    "EVAL_SETS",
    "LORA_TARGETS",
    "PAPER_TABLE1",
    "CalmKVSettings",
    "Log",
    "build_bridges",
    "build_lora",
    "build_models",
    "composition_rows",
    "distinct_examples",
    "exact_match",
    "keys_in",
    "load_settings",
    "lora_rank",
    "run_study",
    "score",
    "study_tasks",
]


PAPER_TABLE1 = {
    "m_A": {"kv_substitution": 98.1, "numeric_arithmetic": 4.2, "kv_arithmetic": 0.7},
    "m_B": {"kv_substitution": 0.0, "numeric_arithmetic": 73.7, "kv_arithmetic": 0.0},
    "CALM": {"kv_substitution": 92.9, "numeric_arithmetic": 72.0, "kv_arithmetic": 84.3},
}
"""Bansal et al. (2024), Table 1, accuracy in %."""


# -- evaluation ---------------------------------------------------------------------------------------
def exact_match(outputs: list[str], answers: list[str]) -> float:
    """Accuracy in % of outputs equal to their answers after stripping whitespace."""
    return 100.0 * sum(o.strip() == a.strip() for o, a in zip(outputs, answers, strict=True)) / len(answers)


def score(model: Any, tokenizer: Any, tests: dict[str, list[Any]], settings: CalmKVSettings, mode: str | None) -> dict:
    """Exact match on every test set: plain models by the evaluator's greedy decoder, composed ones by
    :func:`graftkit.compose.generate.generate_text` in ``mode`` ("paper" or "encoder")."""
    from graftkit.compose.generate import generate_text
    from graftkit.evaluate.generate import generate_texts

    scores = {}
    for name, examples in tests.items():
        prompts, answers = [e.prompt for e in examples], [e.answer for e in examples]
        if mode is None:
            outputs = generate_texts(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens)
        else:
            outputs = []
            for i in range(0, len(prompts), 64):
                outputs += generate_text(model, tokenizer, prompts[i : i + 64], settings.max_new_tokens, mode=mode)
        scores[name] = round(exact_match(outputs, answers), 2)
    return scores


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    import graftkit

    return {
        "graftkit": graftkit.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def run_study(
    settings: CalmKVSettings | CalmKVRealSettings | None = None,
    *,
    backend: Backend | None = None,
    store: UnitStore | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Build (or find in ``store``) every model and bridge on ``backend``, then score them here.

    ``backend`` defaults to :class:`LocalBackend`, ``store`` to ``UnitStore()`` (under ``$GRAFTKIT_CACHE``).
    Returns the result dict (see :mod:`graftkit.study.calm_kv_report` for its tables). Real-anchor
    settings run :func:`graftkit.study.calm_kv_real.run_real_study` instead."""
    import torch

    if isinstance(settings, CalmKVRealSettings):
        from graftkit.study.calm_kv_real import run_real_study
        from graftkit.study.calm_kv_real_report import finish

        return finish(run_real_study(settings, backend=backend, store=store, log=log))

    from graftkit.compose.files import load_bridge
    from graftkit.compose.params import bridge_param_count
    from graftkit.zoo import train

    settings = settings or CalmKVSettings()
    backend = backend or LocalBackend()
    store = store or UnitStore()
    say = log or (lambda line: None)
    from transformers.utils import logging as hf_logging

    threads, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(settings.threads)
    hf_logging.disable_progress_bar()  # per-file load bars are noise for models this small
    try:
        tasks = study_tasks(settings)
        paths = build_models(settings, backend, store, say)
        bridges = build_bridges(settings, backend, store, say, paths)
        lora_path = build_lora(settings, backend, store, say, paths)

        anchor_model, tokenizer = train.load_model(paths["m_B"])
        composed = load_bridge(bridges["CALM"], anchor=anchor_model, augments=[train.load_model(paths["m_A"])[0]])
        count = bridge_param_count(composed)
        lora_info = json.loads((lora_path / "training.json").read_text())

        tests = {name: distinct_examples(tasks[name], "test", settings.n_eval, settings.seed) for name in EVAL_SETS}
        rows: dict[str, dict[str, float]] = {}
        eval_start = time.perf_counter()
        for label in ("m_A", "m_B"):
            model, _ = train.load_model(paths[label])
            rows[label] = score(model.eval(), tokenizer, tests, settings, None)
        rows["CALM"] = score(composed.eval(), tokenizer, tests, settings, "paper")
        rows["CALM, encoder mode"] = score(composed, tokenizer, tests, settings, "encoder")
        for label, aug in BRIDGES.items():
            if label == "CALM":  # scored above, in both decoding modes
                continue
            model = load_bridge(bridges[label], anchor=anchor_model, augments=[train.load_model(paths[aug])[0]])
            rows[label] = score(model.eval(), tokenizer, tests, settings, "paper")
        lora_model, _ = train.load_model(lora_path)
        rows["LoRA on m_B"] = score(lora_model.eval(), tokenizer, tests, settings, None)
        eval_seconds = time.perf_counter() - eval_start

        table = KVTable(settings.kv())
        n_params = {
            label: sum(p.numel() for p in train.load_model(paths[label])[0].parameters()) for label in ("m_A", "m_B")
        }
        return {
            "study": "calm_kv",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "versions": _versions(),
            "settings": settings.model_dump(mode="json"),
            "keys": {"n": len(table.values), "train": list(table.train_keys), "held_out": len(table.other_keys)},
            "params": {
                **n_params,
                "bridge": count.bridge,
                "bridge_percent_of_anchor": round(count.percent_of_anchor, 2),
                "lora_rank": lora_info["rank"],
                "lora_trainable": lora_info["trainable"],
            },
            "seconds": {
                **{label: stage_seconds(p) for label, p in paths.items()},
                **{f"bridge: {label}": stage_seconds(p) for label, p in bridges.items()},
                "LoRA on m_B": stage_seconds(lora_path),
                "evaluation": round(eval_seconds, 1),
            },
            "final_loss": {
                label: round(float(json.loads((paths[label] / "training.json").read_text())["final_loss"]), 4)
                for label in ("m_A", "m_B", "m_A text-only")
            }
            | {
                f"bridge: {label}": json.loads((p / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]
                for label, p in bridges.items()
            }
            | {"LoRA on m_B": lora_info["final_loss"]},
            "n_eval": settings.n_eval,
            "n_examples": {"composition_train": len(composition_rows(settings))}
            | {name: len(examples) for name, examples in tests.items()},
            "scores": rows,
            "paper": PAPER_TABLE1,
            "paths": {k: str(v) for k, v in {**paths, **bridges, "LoRA on m_B": lora_path}.items()},
        }
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()
