"""Stages of the real-anchor CALM studies, as study-engine units: models, bridges, LoRA, scores, pre-check.

Each replicate (one seed: data, data streams, initialisations, bridges) builds, from a study's settings
(a :class:`~graftkit.study.calm_real_settings.RealAnchorSettings`, which names the datasets):

- ``m_B``: the anchor fine-tuned on ``DATA.anchor_task`` (:func:`~graftkit.study.calm_kv_real_units.train_model`),
  Numeric-Arithmetic in the key-value study;
- ``m_A``: a fresh :class:`~graftkit.study.calm_real_settings.AugmentShape` Llama over the anchor's
  tokenizer, trained on ``DATA.augment_task`` (KV-Substitution over every key); ``m_A random`` and
  ``m_A untrained`` (zoo text, never the study's data) for the ablations;
- the bridges of :data:`VARIANTS` and LoRA on ``m_B`` (the units of :mod:`graftkit.study.calm_kv_stages`),
  all on ``DATA.composition`` (KV-Arithmetic over the 20% keys only).

The pre-check (:func:`precheck_unit`) belongs to the key-value study alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from graftkit.compose.wiring import Connection, default_connections, validate_connections
from graftkit.study.calm_kv_real_settings import CalmKVRealSettings
from graftkit.study.calm_kv_stages import LORA_TARGETS, lora_rank
from graftkit.study.calm_real_settings import RealAnchorSettings
from graftkit.study.engine import Unit
from graftkit.zoo.train import TrainConfig

UNITS = "graftkit.study.calm_kv_real_units"
STAGES = "graftkit.study.calm_kv_stages"


class Variant(NamedTuple):
    """A bridge row: the augment it reads, whether it trains and decodes in encoder mode, its ablation."""

    augment: str
    encoder: bool = False
    ablation: str | None = None


VARIANTS = {
    "CALM": Variant("m_A"),
    "CALM, random m_A": Variant("m_A random", ablation="random_m_A"),
    "CALM, untrained m_A": Variant("m_A untrained", ablation="untrained_m_A"),
    "CALM, encoder mode": Variant("m_A", encoder=True, ablation="encoder"),
}
LORA = "LoRA on m_B"
MODEL_ABLATION = {"m_A random": "random_m_A", "m_A untrained": "untrained_m_A"}


def tag(label: str, seed: int) -> str:
    """A unit label: ``"m_A (seed 1)"``."""
    return f"{label} (seed {seed})"


def wiring(settings: RealAnchorSettings, anchor_folder: Path) -> list[Connection]:
    """The settings' connections, or the paper's default for the anchor's depth; checked against both models
    (the anchor's layer count read from its ``config.json``, no weights loaded)."""
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(anchor_folder).num_hidden_layers
    chosen = list(settings.connections or default_connections(layers, settings.augment.layers))
    return validate_connections(chosen, layers, settings.augment.layers)


def _seeded(config: TrainConfig, seed: int) -> dict[str, Any]:
    return config.model_copy(update={"seed": seed}).model_dump(mode="json")


def _shared(settings: RealAnchorSettings, seed: int) -> dict[str, Any]:
    """Inputs of every trained stage of one replicate: its data (key table or language) and the machine."""
    return {**settings.data_spec(seed), "threads": settings.threads, "device": settings.device, "bf16": settings.bf16}


def model_units(settings: RealAnchorSettings, seed: int, anchor: dict[str, str]) -> dict[str, Unit]:
    """The frozen models of one replicate (the ablation models only when their ablation is on)."""
    shared = {**_shared(settings, seed), "anchor": anchor, "freeze": []}
    task = {"kind": "task", **settings.data_spec(seed), "question": settings.question}
    fresh = {"shape": settings.augment.model_dump(mode="json"), "init_seed": seed, "base": None}
    text = {"kind": "text", "corpus": "pretrain_text"}
    recipes = {
        "m_B": {"base": anchor, "data": {**task, "task": settings.DATA.anchor_task}, "config": settings.anchor_train},
        "m_A": {**fresh, "data": {**task, "task": settings.DATA.augment_task}, "config": settings.augment_train},
        "m_A random": {**fresh, "init_seed": seed + 1000, "data": None, "config": None},
        "m_A untrained": {**fresh, "data": text, "config": settings.untrained_train},
    }
    recipes["m_B"]["freeze"] = list(settings.anchor_freeze)
    wanted = [label for label in recipes if MODEL_ABLATION.get(label, "") in ("", *settings.ablations)]
    units = {}
    for label in wanted:
        config = recipes[label]["config"]
        inputs = {**shared, **recipes[label], "config": None if config is None else _seeded(config, seed)}
        units[label] = Unit(f"{UNITS}:train_model", inputs, tag(label, seed))
    return units


def _bridge_inputs(
    settings: RealAnchorSettings, seed: int, anchor: dict[str, str], connections: list[Connection]
) -> dict[str, Any]:
    """What the bridges and LoRA share: composition data, steps, schedule, anchor (``m_B``)."""
    return {
        **_shared(settings, seed),
        "bridge": settings.bridge.model_dump(mode="json"),
        "connections": [c.model_dump(mode="json") for c in connections],
        "instruction": settings.question,
        "render": "chat",
        "data": settings.DATA.composition,
        "n": settings.n_composition,
        "seed": seed,
        "max_length": settings.augment_train.seq_len,
        "anchor": anchor,
    }


def bridge_units(
    settings: RealAnchorSettings, seed: int, refs: dict[str, dict[str, str]], connections: list[Connection]
) -> dict[str, Unit]:
    """The bridges of :data:`VARIANTS` whose ablation is on, over one replicate's models (``refs``: label →
    model ref)."""
    shared = _bridge_inputs(settings, seed, refs["m_B"], connections)
    return {
        label: Unit(
            f"{STAGES}:bridge",
            {**shared, "augment": refs[v.augment], "encoder_mode": v.encoder},
            tag(label, seed),
        )
        for label, v in VARIANTS.items()
        if v.ablation is None or v.ablation in settings.ablations
    }


def lora_unit(
    settings: RealAnchorSettings, seed: int, refs: dict[str, dict[str, str]], connections: list[Connection]
) -> Unit:
    """LoRA on ``m_B`` with about the main bridge's trainable parameters, the same data and batches."""
    from graftkit.compose.model import compose
    from graftkit.compose.params import bridge_param_count
    from graftkit.zoo.train import load_model

    anchor = load_model(Path(refs["m_B"]["path"]))[0]
    augment = load_model(Path(refs["m_A"]["path"]))[0]
    count = bridge_param_count(compose(anchor, augment, connections)).bridge
    inputs = {**_bridge_inputs(settings, seed, refs["m_B"], connections), "targets": list(LORA_TARGETS)}
    return Unit(f"{STAGES}:lora", {**inputs, "rank": lora_rank(settings, anchor, count)}, tag(LORA, seed))


def score_units(
    settings: RealAnchorSettings, seed: int, refs: dict[str, dict[str, str]], bridges: dict[str, Path]
) -> dict[str, Unit]:
    """One scoring unit per row: ``m_A``, ``m_B``, LoRA (when in ``refs``) and every bridge, each bridge
    decoded in its own mode, on every dataset of ``settings.DATA.datasets``."""
    shared = {**_shared(settings, seed), "question": settings.question, "datasets": list(settings.DATA.datasets)}
    shared |= {"n_eval": settings.n_eval, "seed": seed, "max_new_tokens": settings.max_new_tokens}
    rows: dict[str, dict[str, Any]] = {label: {"model": refs[label], "bridge": None} for label in ("m_A", "m_B")}
    for label, folder in bridges.items():
        variant = VARIANTS[label]
        mode = "encoder" if variant.encoder else "paper"
        rows[label] = {"model": refs["m_B"], "bridge": str(folder), "augment": refs[variant.augment], "mode": mode}
    if LORA in refs:
        rows[LORA] = {"model": refs[LORA], "bridge": None}
    return {label: Unit(f"{UNITS}:score", {**shared, **row}, tag(label, seed)) for label, row in rows.items()}


def precheck_unit(settings: CalmKVRealSettings, model: dict[str, str], connections: list[Connection]) -> Unit:
    """The pre-check on ``model``: patching after block 0 and after every connection's anchor layer
    (or ``precheck.layers``), judged at the first connection's."""
    check = settings.precheck
    first = min(c.anchor_layer for c in connections)
    layers = sorted(set(check.layers or (0, *(c.anchor_layer for c in connections))) | {first})
    inputs = {**_shared(settings, settings.seeds[0]), "model": model, "question": settings.question}
    inputs |= {"n": check.n, "layers": layers, "sets": list(check.sets), "seed": settings.seeds[0]}
    inputs |= {"first_layer": first, "threshold": check.threshold}
    return Unit("graftkit.study.calm_kv_precheck:precheck", inputs, "pre-check")
