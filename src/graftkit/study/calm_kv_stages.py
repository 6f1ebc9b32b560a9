"""Stages of the CALM key-value study: the frozen models, the bridges and the LoRA baseline, each a cache entry.

``m_A`` learns KV-Substitution, ``m_B`` Numeric-Arithmetic; the ablations replace ``m_A`` by a random-weight
and a text-only model. Bridges and LoRA share the composition data, batches, steps and anchor.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graftkit.study.calm_kv_data import COMPOSITION_DATA, composition_rows, study_tasks
from graftkit.study.calm_kv_settings import CalmKVSettings
from graftkit.zoo.cache import Cache, weights_hash
from graftkit.zoo.train import TrainConfig

Log = Callable[[str], None]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _task_batches(task: Any, tokenizer: Any, config: TrainConfig) -> Callable[[int], dict[str, Any]]:
    from graftkit.zoo.data import encode_examples

    def batch_at(step: int) -> dict[str, Any]:
        rng = random.Random(f"calm-kv/{task.name}/{config.seed}/{step}")
        return encode_examples([task.draw("train", rng) for _ in range(config.batch_size)], tokenizer, config.seq_len)

    return batch_at


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


def _train_bridge(
    settings: CalmKVSettings, anchor: Path, augment: Path, out: Path, work: Path, dataset: str = COMPOSITION_DATA
) -> None:
    from graftkit.compose.train import train_bridge

    data = out / "composition.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in composition_rows(settings, dataset)))
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


def stage_seconds(folder: Path) -> float:
    """Seconds a stage took to build, from its ``timing.json`` or ``training.json`` (0.0 when neither)."""
    for name in ("timing.json", "training.json"):
        if (folder / name).is_file():
            return round(float(json.loads((folder / name).read_text()).get("seconds", 0.0)), 1)
    return 0.0


def _entry(cache: Cache, say: Log) -> Callable[[str, dict[str, Any], Callable[[Path, Path], object]], Path]:
    def entry(stage: str, inputs: dict[str, Any], fn: Callable[[Path, Path], object]) -> Path:
        hit = cache.get(stage, inputs)
        path = hit or cache.build(stage, inputs, fn)
        say(f"{stage}: {'cached' if hit else 'built'} in {stage_seconds(path)} s -> {path}")
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
    kv = settings.kv().cache_inputs()
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


BRIDGES = {
    "CALM": "m_A",
    "CALM, random m_A": "m_A random",
    "CALM, text-only m_A": "m_A text-only",
    "CALM, trained on KV-Substitution": "m_A",
}
"""Each trained bridge's label → the augment it reads."""

BRIDGE_DATA = {"CALM, trained on KV-Substitution": "kv_substitution_k20"}
"""Bridges trained on other data than :data:`COMPOSITION_DATA`. The KV-Substitution bridge is a control:
it relays what m_A itself outputs, so it shows whether bridge and training work at this scale."""


def _bridge_inputs(settings: CalmKVSettings, paths: dict[str, Path]) -> dict[str, Any]:
    """Cache inputs shared by the bridges and the LoRA baseline (same data, steps and anchor)."""
    return {
        "bridge": settings.bridge,
        "connections": [c.model_dump() for c in settings.connections],
        "kv": settings.kv().cache_inputs(),
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

    def data_input(label: str) -> dict[str, str]:  # absent for the default data: older keys stay valid
        return {"data": BRIDGE_DATA[label]} if label in BRIDGE_DATA else {}

    return {
        label: entry(
            "calm-kv-bridge",
            {**inputs, "augment": weights_hash(paths[aug]), **data_input(label)},
            lambda out, work, a=paths[aug], d=BRIDGE_DATA.get(label, COMPOSITION_DATA): _train_bridge(
                settings, paths["m_B"], a, out, work, d
            ),
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
