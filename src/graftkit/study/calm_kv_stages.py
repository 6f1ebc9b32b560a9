"""Stages of the CALM key-value study: the frozen models, the bridges and the LoRA baseline, each a study unit.

``m_A`` learns KV-Substitution, ``m_B`` Numeric-Arithmetic; the ablations replace ``m_A`` by a random-weight
and a text-only model. Bridges and LoRA share the composition data, batches, steps and anchor.

Each stage is an engine unit (:mod:`graftkit.study.engine.units`): a function ``fn(inputs, out_dir, work_dir)``
whose JSON-able inputs hold everything that decides its output, parents named by folder and weights hash
(:func:`~graftkit.study.model_units.model_ref`). It writes its model into ``out_dir/model`` (a bridge into
``out_dir/bridge``) and its checkpoints into ``work_dir``, so a backend run into a :class:`UnitStore` skips
what is built and resumes what was killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graftkit.compose.recipe import OptimRecipe
from graftkit.study.calm_kv_data import COMPOSITION_DATA, kv_tasks, task_rows
from graftkit.study.calm_kv_settings import CalmKVSettings
from graftkit.study.engine import Backend, Unit, UnitStore
from graftkit.study.engine.units import RESULT_FILE
from graftkit.study.model_units import model_ref
from graftkit.zoo.cache import weights_hash
from graftkit.zoo.tasks.calm_kv import KVConfig
from graftkit.zoo.train import TrainConfig

Log = Callable[[str], None]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

MODELS = ("m_A", "m_B", "m_A random", "m_A text-only")
"""The frozen models :func:`build_models` returns, in this order."""


# -- training -----------------------------------------------------------------------------------------
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


def lora_rank(settings: CalmKVSettings, anchor_model: Any, bridge_params: int) -> int:
    """The LoRA rank whose trainable count on :data:`LORA_TARGETS` of every layer is closest to the bridge's."""
    per_rank = 0
    for name, module in anchor_model.named_modules():
        if name.rsplit(".", 1)[-1] in LORA_TARGETS:
            per_rank += module.in_features + module.out_features  # A: r × in, B: out × r
    return max(1, round(bridge_params / per_rank))


# -- units --------------------------------------------------------------------------------------------
def _set_threads(inputs: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(int(inputs["threads"]))


def _model_result(folder: Path) -> dict[str, Any]:
    """A model unit's result: its folder's name inside the unit folder and its weights hash."""
    return {"folder": folder.name, "weights": weights_hash(folder)}


def _rows(inputs: dict[str, Any]) -> list[dict[str, str]]:
    """The training rows that ``kv`` (or ``lang``), ``instruction``, ``data``, ``n``, ``seed`` and (optionally)
    ``render`` (a :data:`~graftkit.study.calm_kv_chat.TASK_SETS` name, default ``plain``) name."""
    from graftkit.study.calm_kv_chat import datasets_of

    task = datasets_of(inputs, inputs["instruction"], inputs.get("render", "plain"))[inputs["data"]]
    return task_rows(task, int(inputs["n"]), int(inputs["seed"]))


def task_model(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: a model trained on one study task (``m_A`` on KV-Substitution, ``m_B`` on Numeric-Arithmetic).

    Inputs: ``preset``, ``config`` (a :class:`TrainConfig` dict), ``kv`` (:class:`KVConfig` fields),
    ``instruction``, ``task`` (a name of :func:`kv_tasks`), ``threads``, and ``base`` (a model ref, or
    None: a fresh initialisation) to start from.
    """
    _set_threads(inputs)
    task = kv_tasks(KVConfig(**inputs["kv"]), inputs["instruction"])[inputs["task"]]
    base = Path(inputs["base"]["path"]) if inputs["base"] is not None else None
    config = TrainConfig.model_validate(inputs["config"])
    _train_on_task(inputs["preset"], task, config, out_dir / "model", work_dir, base)
    return _model_result(out_dir / "model")


def random_model(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: a freshly initialised ``preset`` model (inputs ``preset``, ``seed``), never trained."""
    _random_model(inputs["preset"], int(inputs["seed"]), out_dir / "model", work_dir)
    return _model_result(out_dir / "model")


def text_model(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: a ``preset`` model pre-trained on the zoo's text (inputs ``preset``, ``config``, ``threads``)."""
    from graftkit.zoo.train import pretrain

    _set_threads(inputs)
    config = TrainConfig.model_validate(inputs["config"])
    pretrain(inputs["preset"], config, out_dir / "model", work_dir=work_dir, progress=False, device="cpu")
    return _model_result(out_dir / "model")


def bridge(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: a bridge from ``augment`` into ``anchor`` (model refs) trained on the rows of :func:`_rows`,
    saved with them into ``out_dir/bridge``.

    Other inputs: ``bridge`` (an :class:`OptimRecipe` dict), ``connections``, ``max_length``, ``threads``,
    and optionally ``bf16`` (``auto``), ``encoder_mode`` (False) and ``device`` (``cpu``).
    The bridge trainer writes (and resumes from) its checkpoints in ``work_dir/bridge``; the finished
    folder, checkpoints removed, is moved into ``out_dir`` in one rename.
    """
    from graftkit.compose.files import MANIFEST
    from graftkit.compose.train import train_bridge

    _set_threads(inputs)
    folder = out_dir / "bridge"
    if (folder / MANIFEST).is_file():  # moved into place by a run killed before its unit completed
        return {"folder": folder.name}
    optim = OptimRecipe.model_validate(inputs["bridge"])
    trained = work_dir / "bridge"
    trained.mkdir(parents=True, exist_ok=True)
    data = trained / "composition.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(inputs)))
    recipe = {
        "anchor": inputs["anchor"]["path"],
        "augments": [{"path": inputs["augment"]["path"], "connections": inputs["connections"]}],
        "data": {"train": str(data), "max_length": int(inputs["max_length"])},
        "optim": optim.model_dump(mode="json"),
        "output": str(trained),
        "eval_every": max(1, optim.steps // 10),
        "checkpoint_every": max(1, optim.steps // 4),
        "seed": int(inputs["seed"]),
        "device": inputs.get("device", "cpu"),
        "bf16": inputs.get("bf16", "auto"),
        "encoder_mode": bool(inputs.get("encoder_mode", False)),
        "progress": False,
    }
    train_bridge(recipe)
    shutil.rmtree(trained / "checkpoints", ignore_errors=True)
    os.replace(trained, folder)
    return {"folder": folder.name}


def lora(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: LoRA of ``rank`` on the ``targets`` of ``anchor`` (``m_B``), merged and saved into ``out_dir/model``.

    The other inputs are a bridge's: the same data (:func:`_rows`), batch order, steps and schedule
    (``bf16`` and ``device`` too, when given).
    """
    from peft import LoraConfig, get_peft_model

    from graftkit.compose.data import collate, micro_batch, tokenize
    from graftkit.zoo.train import load_model, save_model, train_loop

    _set_threads(inputs)
    rank, seed, opt = int(inputs["rank"]), int(inputs["seed"]), OptimRecipe.model_validate(inputs["bridge"])
    model, tokenizer = load_model(Path(inputs["anchor"]["path"]))
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(inputs["targets"]))
    )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    examples = tokenize(_rows(inputs), tokenizer, int(inputs["max_length"]), True)
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
        seed=seed,
    )

    def batch_at(step: int) -> dict[str, Any]:  # the exact batches train_bridge draws (one process)
        return collate(micro_batch(examples, step, opt.batch_size, seed), tokenizer.pad_token_id)

    device, bf16 = inputs.get("device", "cpu"), inputs.get("bf16")
    stats = train_loop(peft_model, batch_at, config, work_dir=work_dir, progress=False, device=device, bf16=bf16)
    folder = out_dir / "model"
    info = {"stage": "lora", "rank": rank, "trainable": trainable, **stats.model_dump()}
    save_model(peft_model.merge_and_unload().cpu(), tokenizer, folder, info)
    return _model_result(folder)


def stage_seconds(folder: Path) -> float:
    """Seconds a stage's unit took, from the engine's ``result.json`` in ``folder`` or in the unit folder
    holding it (a unit's model or bridge folder); 0.0 when neither has one."""
    for unit_folder in (folder, folder.parent):
        if (unit_folder / RESULT_FILE).is_file():
            return round(float(json.loads((unit_folder / RESULT_FILE).read_text()).get("seconds", 0.0)), 3)
    return 0.0


def _run(backend: Backend, store: UnitStore, say: Log, units: dict[str, Unit], progress: str) -> dict[str, Path]:
    """Run ``units`` (by label) on ``backend`` into ``store``; label → the folder each unit's output is in."""
    cached = {label for label, unit in units.items() if store.get(unit) is not None}
    results = backend.map(list(units.values()), store, progress=progress)
    folders = {}
    for (label, unit), result in zip(units.items(), results, strict=True):
        folder = store.result_path(unit) / result["folder"]
        say(f"{label}: {'cached' if label in cached else 'built'} in {stage_seconds(folder)} s -> {folder}")
        folders[label] = folder
    return folders


# -- the stages ---------------------------------------------------------------------------------------
def _data_inputs(settings: CalmKVSettings) -> dict[str, Any]:
    """Inputs every trained stage shares: the key table, the prompt prefix and the torch threads."""
    return {"kv": dataclasses.asdict(settings.kv()), "instruction": settings.instruction, "threads": settings.threads}


def _task_unit(
    settings: CalmKVSettings, label: str, preset: str, config: TrainConfig, task: str, base: dict[str, str] | None
) -> Unit:
    inputs = {"preset": preset, "config": config.model_dump(mode="json"), "task": task, "base": base}
    return Unit(f"{__name__}:task_model", {**inputs, **_data_inputs(settings)}, label)


def _text_unit(settings: CalmKVSettings, label: str, preset: str, config: TrainConfig) -> Unit:
    inputs = {"preset": preset, "config": config.model_dump(mode="json"), "threads": settings.threads}
    return Unit(f"{__name__}:text_model", inputs, label)


def build_models(
    settings: CalmKVSettings, backend: Backend, store: UnitStore, say: Log, only: Sequence[str] | None = None
) -> dict[str, Path]:
    """The four frozen models of :data:`MODELS` (or the ``only`` ones), built or found in ``store``.

    With ``anchor_pretrain`` set, ``m_B``'s text pre-training ("m_B base") runs with the other models
    and ``m_B`` is trained from it after them. Returns label → model folder.
    """
    wanted = [label for label in MODELS if only is None or label in only]
    from_text = settings.anchor_pretrain is not None and "m_B" in wanted

    def anchor(base: dict[str, str] | None) -> Unit:
        return _task_unit(settings, "m_B", settings.anchor_preset, settings.anchor_train, "numeric_arithmetic", base)

    units = {
        "m_A": _task_unit(settings, "m_A", settings.augment_preset, settings.augment_train, "kv_substitution", None),
        "m_B": anchor(None),
        "m_A random": Unit(
            f"{__name__}:random_model", {"preset": settings.augment_preset, "seed": settings.seed + 1}, "m_A random"
        ),
        "m_A text-only": _text_unit(settings, "m_A text-only", settings.augment_preset, settings.untrained_train),
    }
    first = {label: units[label] for label in wanted if not (from_text and label == "m_B")}
    if from_text:  # m_B's text pre-training runs with the other models, m_B after them
        first["m_B base"] = _text_unit(settings, "m_B base", settings.anchor_preset, settings.anchor_pretrain)
    paths = _run(backend, store, say, first, "calm-kv: models")
    if from_text:
        paths |= _run(backend, store, say, {"m_B": anchor(model_ref(paths.pop("m_B base")))}, "calm-kv: m_B")
    return {label: paths[label] for label in wanted}


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
    """Unit inputs shared by the bridges and the LoRA baseline (same data, steps and anchor)."""
    return {
        "bridge": settings.bridge.model_dump(mode="json"),
        "connections": [c.model_dump(mode="json") for c in settings.connections],
        **_data_inputs(settings),
        "data": COMPOSITION_DATA,
        "n": settings.n_composition,
        "seed": settings.seed,
        "max_length": settings.augment_train.seq_len,
        "anchor": model_ref(paths["m_B"]),
    }


def build_bridges(
    settings: CalmKVSettings,
    backend: Backend,
    store: UnitStore,
    say: Log,
    paths: dict[str, Path],
    only: Sequence[str] | None = None,
) -> dict[str, Path]:
    """The bridges of :data:`BRIDGES` (or the ``only`` ones) over the models in ``paths``, built or found
    in ``store``. Returns label → bridge folder."""
    shared = _bridge_inputs(settings, paths)
    units = {
        label: Unit(
            f"{__name__}:bridge",
            {**shared, "augment": model_ref(paths[aug]), "data": BRIDGE_DATA.get(label, COMPOSITION_DATA)},
            label,
        )
        for label, aug in BRIDGES.items()
        if only is None or label in only
    }
    return _run(backend, store, say, units, "calm-kv: bridges")


def build_lora(settings: CalmKVSettings, backend: Backend, store: UnitStore, say: Log, paths: dict[str, Path]) -> Path:
    """The LoRA baseline on ``m_B``, its rank matched to the bridge's parameter count. Returns its model folder."""
    from graftkit.compose.model import compose
    from graftkit.compose.params import bridge_param_count
    from graftkit.zoo.train import load_model

    anchor = load_model(paths["m_B"])[0]
    count = bridge_param_count(compose(anchor, load_model(paths["m_A"])[0], list(settings.connections)))
    rank = lora_rank(settings, anchor, count.bridge)
    inputs = {**_bridge_inputs(settings, paths), "rank": rank, "targets": list(LORA_TARGETS)}
    label = "LoRA on m_B"
    return _run(backend, store, say, {label: Unit(f"{__name__}:lora", inputs, label)}, "calm-kv: LoRA")[label]
