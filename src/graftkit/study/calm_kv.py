"""The CALM key-value study (Bansal et al. 2024, §4.1, Table 1 and the Table 5 ablations), scaled to a CPU.

``m_A`` (small) learns KV-Substitution over every key, ``m_B`` (larger) learns Numeric-Arithmetic, and a
bridge from ``m_A`` into ``m_B`` is trained on KV-Arithmetic over the 20% "train" keys only — the
paper's reading of the composition data (arithmetic, not substitution). All three models and the
composition are scored on the three datasets, KV-Arithmetic also on the held-out 80% of the keys.

Ablations: ``m_A`` swapped for a random-weight model and for a same-size model pretrained on text (never
on the keys); encoder-mode decoding of the main bridge; LoRA on ``m_B`` with about the bridge's number of
trainable parameters, the same data, batches and steps.

Every trained model and bridge is a :class:`~graftkit.zoo.cache.Cache` entry, so a rerun only evaluates.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from graftkit.compose.recipe import OptimRecipe, apply_overrides
from graftkit.compose.wiring import Connection
from graftkit.zoo.cache import Cache, weights_hash
from graftkit.zoo.tasks.calm_kv import KVArithmetic, KVConfig, KVSubstitution, KVTable, NumericArithmetic
from graftkit.zoo.train import TrainConfig

Log = Callable[[str], None]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

EVAL_SETS = ("kv_substitution", "numeric_arithmetic", "kv_arithmetic", "kv_arithmetic_k20", "kv_arithmetic_k80")
"""Datasets every row is scored on: ``_k20`` uses only the composition's keys, ``_k80`` only held-out keys."""

PAPER_TABLE1 = {
    "m_A": {"kv_substitution": 98.1, "numeric_arithmetic": 4.2, "kv_arithmetic": 0.7},
    "m_B": {"kv_substitution": 0.0, "numeric_arithmetic": 73.7, "kv_arithmetic": 0.0},
    "CALM": {"kv_substitution": 92.9, "numeric_arithmetic": 72.0, "kv_arithmetic": 84.3},
}
"""Bansal et al. (2024), Table 1, accuracy in %."""


class CalmKVSettings(BaseModel):
    """Everything that decides the study's models, data and scores (the cache keys hash these).

    The key table and expressions are a :class:`KVConfig`; ``instruction`` is the one prompt prefix
    shared by the three datasets, so ``m_A`` reads a KV-Arithmetic prompt exactly as it reads a
    KV-Substitution one (the paper's prompts carry no task instruction).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    n_keys: int = Field(80, ge=5)
    max_value: int = Field(99, ge=5)
    min_terms: int = Field(2, ge=2)
    max_terms: int = Field(2, ge=2)
    ops: str = "+-"
    train_fraction: float = Field(0.2, gt=0, lt=1)
    instruction: str = "kv"

    augment_preset: str = "xs"
    anchor_preset: str = "s"
    augment_train: TrainConfig = TrainConfig(steps=1200, batch_size=32, seq_len=48, lr=3e-3, warmup_steps=60)
    anchor_train: TrainConfig = TrainConfig(steps=2000, batch_size=32, seq_len=48, lr=2e-3, warmup_steps=100)
    anchor_pretrain: TrainConfig | None = None
    """Pre-training of ``m_B`` on zoo text before its arithmetic training (None: arithmetic from scratch)."""
    untrained_train: TrainConfig = TrainConfig(steps=1200, batch_size=32, seq_len=48, lr=3e-3, warmup_steps=60)
    """Pre-training (zoo text, no keys) of the same-size ``m_A`` of ablation (b)."""

    connections: tuple[Connection, ...] = (
        Connection(anchor_layer=0, augment_layer=1),
        Connection(anchor_layer=1, augment_layer=3),
    )
    bridge: OptimRecipe = OptimRecipe(lr=3e-3, steps=1200, warmup=60, batch_size=32)
    n_composition: int = Field(
        4000, ge=1, description="at most this many distinct KV-Arithmetic train examples over the 20% keys"
    )
    n_eval: int = Field(300, ge=1, description="test examples per dataset")
    max_new_tokens: int = 10
    threads: int = Field(1, ge=1, description="torch threads for the whole study")

    def kv(self) -> KVConfig:
        return KVConfig(
            seed=self.seed,
            n_keys=self.n_keys,
            max_value=self.max_value,
            min_terms=self.min_terms,
            max_terms=self.max_terms,
            ops=self.ops,
            train_fraction=self.train_fraction,
        )

    @classmethod
    def quick(cls) -> CalmKVSettings:
        """A tiny variant for tests: a few steps of xs models, a handful of examples."""
        tiny = TrainConfig(steps=4, batch_size=8, seq_len=48, lr=3e-3, warmup_steps=1)
        return cls(
            n_keys=50,
            anchor_preset="xs",
            augment_train=tiny,
            anchor_train=tiny,
            untrained_train=tiny,
            bridge=OptimRecipe(lr=1e-3, steps=3, warmup=1, batch_size=8),
            n_composition=24,
            n_eval=6,
            max_new_tokens=6,
        )


def load_settings(quick: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> CalmKVSettings:
    """The default (or ``quick``) settings with dotted ``key=value`` overrides (``bridge.steps=800``)."""
    base = CalmKVSettings.quick() if quick else CalmKVSettings()
    return CalmKVSettings.model_validate(apply_overrides(base.model_dump(mode="json"), overrides))


# -- data ---------------------------------------------------------------------------------------------
def study_tasks(settings: CalmKVSettings) -> dict[str, Any]:
    """The study's tasks by dataset name (:data:`EVAL_SETS`), over the settings' key table."""
    kv = settings.kv()
    tasks = {
        "kv_substitution": KVSubstitution(kv, name="kv_substitution"),
        "numeric_arithmetic": NumericArithmetic(kv, name="numeric_arithmetic"),
        "kv_arithmetic": KVArithmetic(kv, name="kv_arithmetic"),
        "kv_arithmetic_k20": KVArithmetic(kv, keys="train", name="kv_arithmetic_k20"),
        "kv_arithmetic_k80": KVArithmetic(kv, keys="other", name="kv_arithmetic_k80"),
    }
    for task in tasks.values():
        task.instruction = settings.instruction  # instance attribute: the registered tasks are untouched
    return tasks


def distinct_examples(task: Any, split: str, n: int, seed: int = 0, patience: int = 20_000) -> list[Any]:
    """Up to ``n`` distinct examples of ``split``: :meth:`Task.examples`' stream, stopping once ``patience``
    draws in a row bring nothing new (a small key set has fewer than ``n`` distinct expressions)."""
    from graftkit.zoo.tasks import Example

    rng = random.Random(f"{task.name}/{split}/{seed}")
    seen: set[str] = set()
    out, idle = [], 0
    while len(out) < n and idle < patience:
        text, answer = task.sample(rng)
        prompt = task.format(text)
        if prompt in seen or task.split_of(prompt) != split:
            idle += 1
            continue
        seen.add(prompt)
        out.append(Example(prompt, answer))
        idle = 0
    return out


def composition_rows(settings: CalmKVSettings) -> list[dict[str, str]]:
    """The bridge's training data: distinct KV-Arithmetic train-split examples over the 20% keys only."""
    task = study_tasks(settings)["kv_arithmetic_k20"]
    examples = distinct_examples(task, "train", settings.n_composition, seed=settings.seed)
    return [{"prompt": e.prompt, "completion": e.answer} for e in examples]


def keys_in(text: str) -> list[str]:
    """The key names in an expression prompt (maximal runs of lowercase letters after the instruction)."""
    body = text.split("\n", 1)[-1]
    keys, run = [], ""
    for ch in body + " ":
        if ch.islower():
            run += ch
        elif run:
            keys.append(run)
            run = ""
    return keys


def _task_batches(task: Any, tokenizer: Any, config: TrainConfig) -> Callable[[int], dict[str, Any]]:
    from graftkit.zoo.data import encode_examples

    def batch_at(step: int) -> dict[str, Any]:
        rng = random.Random(f"calm-kv/{task.name}/{config.seed}/{step}")
        return encode_examples([task.draw("train", rng) for _ in range(config.batch_size)], tokenizer, config.seq_len)

    return batch_at


# -- stages -------------------------------------------------------------------------------------------
def _train_on_task(
    preset: str, task: Any, config: TrainConfig, out: Path, work: Path, base: Path | None = None
) -> None:
    """A ``preset`` model trained on one task's examples (answer loss), saved into ``out``.

    Starts from the model in ``base`` when given, else from a fresh initialisation.
    """
    from graftkit.zoo.presets import new_model
    from graftkit.zoo.tokenizer import build_tokenizer
    from graftkit.zoo.train import load_model, save_model, train_loop

    if base is not None:
        model, tokenizer = load_model(base)
    else:
        tokenizer = build_tokenizer()
        model = new_model(preset, tokenizer, seed=config.seed)
    stats = train_loop(
        model, _task_batches(task, tokenizer, config), config, work_dir=work, progress=False, device="cpu"
    )
    info = {
        "stage": "calm-kv",
        "preset": preset,
        "task": task.name,
        "config": config.model_dump(),
        **stats.model_dump(),
    }
    save_model(model, tokenizer, out, {**info, "params": sum(p.numel() for p in model.parameters())})


def _random_model(preset: str, seed: int, out: Path, work: Path) -> None:
    from graftkit.zoo.presets import new_model
    from graftkit.zoo.tokenizer import build_tokenizer
    from graftkit.zoo.train import save_model

    tokenizer = build_tokenizer()
    model = new_model(preset, tokenizer, seed=seed)
    save_model(model, tokenizer, out, {"stage": "random", "preset": preset, "seed": seed, "seconds": 0.0})


def _train_bridge(settings: CalmKVSettings, anchor: Path, augment: Path, out: Path, work: Path) -> None:
    from graftkit.compose.train import train_bridge

    data = out / "composition.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in composition_rows(settings)))
    recipe = {
        "anchor": str(anchor),
        "augments": [{"path": str(augment), "connections": [c.model_dump() for c in settings.connections]}],
        "data": {"train": str(data), "max_length": settings.augment_train.seq_len},
        "optim": settings.bridge.model_dump(mode="json"),
        "output": str(out),
        "eval_every": max(1, settings.bridge.steps // 10),
        "checkpoint_every": max(1, settings.bridge.steps // 4),
        "seed": settings.seed,
        "device": "cpu",
        "progress": False,
    }
    start = time.perf_counter()
    train_bridge(recipe)
    (out / "timing.json").write_text(json.dumps({"seconds": time.perf_counter() - start}) + "\n")


def lora_rank(settings: CalmKVSettings, anchor_model: Any, bridge_params: int) -> int:
    """The LoRA rank whose trainable count on :data:`LORA_TARGETS` of every layer is closest to the bridge's."""
    per_rank = 0
    for name, module in anchor_model.named_modules():
        if name.rsplit(".", 1)[-1] in LORA_TARGETS:
            per_rank += module.in_features + module.out_features  # A: r × in, B: out × r
    return max(1, round(bridge_params / per_rank))


def _train_lora(settings: CalmKVSettings, anchor: Path, rank: int, out: Path, work: Path) -> None:
    """LoRA on ``m_B``: the bridge's data, batch order, steps and schedule; merged and saved into ``out``."""
    from peft import LoraConfig, get_peft_model

    from graftkit.compose.data import collate, micro_batch, tokenize
    from graftkit.zoo.train import load_model, save_model, train_loop

    model, tokenizer = load_model(anchor)
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS))
    )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    examples = tokenize(composition_rows(settings), tokenizer, settings.augment_train.seq_len, True)
    opt = settings.bridge
    config = TrainConfig(
        steps=opt.steps,
        batch_size=opt.batch_size,
        lr=opt.lr,
        min_lr_ratio=opt.min_lr_ratio,
        warmup_steps=opt.warmup,
        weight_decay=opt.weight_decay,
        beta1=opt.betas[0],
        beta2=opt.betas[1],
        grad_clip=opt.max_grad_norm or 1e9,
        seed=settings.seed,
    )

    def batch_at(step: int) -> dict[str, Any]:  # the exact batches train_bridge draws (one process)
        return collate(micro_batch(examples, step, opt.batch_size, settings.seed), tokenizer.pad_token_id)

    stats = train_loop(peft_model, batch_at, config, work_dir=work, progress=False, device="cpu")
    merged = peft_model.merge_and_unload()
    save_model(merged, tokenizer, out, {"stage": "lora", "rank": rank, "trainable": trainable, **stats.model_dump()})


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


def _seconds(folder: Path) -> float:
    for name in ("timing.json", "training.json"):
        if (folder / name).is_file():
            return round(float(json.loads((folder / name).read_text()).get("seconds", 0.0)), 1)
    return 0.0


def _entry(cache: Cache, say: Log) -> Callable[[str, dict[str, Any], Callable[[Path, Path], object]], Path]:
    def entry(stage: str, inputs: dict[str, Any], fn: Callable[[Path, Path], object]) -> Path:
        hit = cache.get(stage, inputs)
        path = hit or cache.build(stage, inputs, fn)
        say(f"{stage}: {'cached' if hit else 'built'} in {_seconds(path)} s -> {path}")
        return path

    return entry


def build_models(
    settings: CalmKVSettings, cache: Cache, say: Log, only: Sequence[str] | None = None
) -> dict[str, Path]:
    """The four frozen models (``m_A``, ``m_B`` and the two replacement ``m_A``), built or from the cache.

    ``only`` builds a subset (e.g. ``["m_B"]`` in a second process, to use a second core).
    """
    from graftkit.zoo import train

    tasks = study_tasks(settings)
    kv = settings.kv().__dict__
    build = _entry(cache, say)

    def entry(stage: str, inputs: dict[str, Any], fn: Callable[[Path, Path], object], label: str) -> Path | None:
        return build(stage, inputs, fn) if only is None or label in only else None

    paths: dict[str, Path | None] = {}
    paths["m_A"] = entry(
        "calm-kv-augment",
        {
            "preset": settings.augment_preset,
            "config": settings.augment_train,
            "kv": kv,
            "task": "kv_substitution",
            "instruction": settings.instruction,
        },
        lambda out, work: _train_on_task(
            settings.augment_preset, tasks["kv_substitution"], settings.augment_train, out, work
        ),
        "m_A",
    )
    base = None
    if settings.anchor_pretrain is not None and (only is None or "m_B" in only):
        base = entry(
            "pretrain",  # the zoo's own pre-training stage: shared with any zoo using the same inputs
            {"preset": settings.anchor_preset, "config": settings.anchor_pretrain, "families": ["pretrain_text"]},
            lambda out, work: train.pretrain(
                settings.anchor_preset, settings.anchor_pretrain, out, work_dir=work, progress=False, device="cpu"
            ),
            "m_B",
        )
    paths["m_B"] = entry(
        "calm-kv-anchor",
        {
            "preset": settings.anchor_preset,
            "config": settings.anchor_train,
            "kv": kv,
            "task": "numeric_arithmetic",
            "instruction": settings.instruction,
        }
        | ({"base": weights_hash(base)} if base is not None else {}),
        lambda out, work: _train_on_task(
            settings.anchor_preset, tasks["numeric_arithmetic"], settings.anchor_train, out, work, base
        ),
        "m_B",
    )
    paths["m_A random"] = entry(
        "calm-kv-random",
        {"preset": settings.augment_preset, "seed": settings.seed + 1},
        lambda out, work: _random_model(settings.augment_preset, settings.seed + 1, out, work),
        "m_A random",
    )
    paths["m_A text-only"] = entry(
        "pretrain",  # the zoo's own pre-training stage: shared with any zoo using the same inputs
        {"preset": settings.augment_preset, "config": settings.untrained_train, "families": ["pretrain_text"]},
        lambda out, work: train.pretrain(
            settings.augment_preset, settings.untrained_train, out, work_dir=work, progress=False, device="cpu"
        ),
        "m_A text-only",
    )
    return {k: v for k, v in paths.items() if v is not None}


BRIDGES = {"CALM": "m_A", "CALM, random m_A": "m_A random", "CALM, text-only m_A": "m_A text-only"}
"""Each trained bridge's label → the augment it reads."""


def _bridge_inputs(settings: CalmKVSettings, paths: dict[str, Path]) -> dict[str, Any]:
    """Cache inputs shared by the bridges and the LoRA baseline (same data, steps and anchor)."""
    return {
        "bridge": settings.bridge,
        "connections": [c.model_dump() for c in settings.connections],
        "kv": settings.kv().__dict__,
        "instruction": settings.instruction,
        "n": settings.n_composition,
        "seed": settings.seed,
        "max_length": settings.augment_train.seq_len,
        "anchor": weights_hash(paths["m_B"]),
    }


def build_bridges(
    settings: CalmKVSettings, cache: Cache, say: Log, paths: dict[str, Path], only: Sequence[str] | None = None
) -> dict[str, Path]:
    """The bridges of :data:`BRIDGES` (or the ``only`` ones), built or from the cache."""
    entry, inputs = _entry(cache, say), _bridge_inputs(settings, paths)
    return {
        label: entry(
            "calm-kv-bridge",
            {**inputs, "augment": weights_hash(paths[aug])},
            lambda out, work, a=paths[aug]: _train_bridge(settings, paths["m_B"], a, out, work),
        )
        for label, aug in BRIDGES.items()
        if only is None or label in only
    }


def build_lora(settings: CalmKVSettings, cache: Cache, say: Log, paths: dict[str, Path]) -> Path:
    """The LoRA baseline on ``m_B``, its rank matched to the bridge's parameter count."""
    from graftkit.compose.model import compose
    from graftkit.compose.params import bridge_param_count
    from graftkit.zoo.train import load_model

    anchor = load_model(paths["m_B"])[0]
    count = bridge_param_count(compose(anchor, load_model(paths["m_A"])[0], list(settings.connections)))
    rank = lora_rank(settings, anchor, count.bridge)
    return _entry(cache, say)(
        "calm-kv-lora",
        {**_bridge_inputs(settings, paths), "rank": rank, "targets": list(LORA_TARGETS)},
        lambda out, work: _train_lora(settings, paths["m_B"], rank, out, work),
    )


def run_study(
    settings: CalmKVSettings | None = None, *, cache: Cache | None = None, log: Log | None = None
) -> dict[str, Any]:
    """Build (or find in the cache) every model and bridge, then score them. Returns the result dict
    (see :mod:`graftkit.study.calm_kv_report` for its tables)."""
    import torch

    from graftkit.compose.files import load_bridge
    from graftkit.compose.params import bridge_param_count
    from graftkit.zoo import train

    settings = settings or CalmKVSettings()
    cache = cache or Cache()
    say = log or (lambda line: None)
    from transformers.utils import logging as hf_logging

    threads, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(settings.threads)
    hf_logging.disable_progress_bar()  # per-file load bars are noise for models this small
    try:
        tasks = study_tasks(settings)
        paths = build_models(settings, cache, say)
        bridges = build_bridges(settings, cache, say, paths)
        lora_path = build_lora(settings, cache, say, paths)

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
        for label in ("CALM, random m_A", "CALM, text-only m_A"):
            aug = "m_A random" if "random" in label else "m_A text-only"
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
                **{label: _seconds(p) for label, p in paths.items()},
                **{f"bridge: {label}": _seconds(p) for label, p in bridges.items()},
                "LoRA on m_B": _seconds(lora_path),
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
