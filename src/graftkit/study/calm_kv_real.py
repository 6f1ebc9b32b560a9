"""The CALM key-value study on a real anchor (Bansal et al. 2024, §4.1 Table 1, Table 5 ablations).

``graft study calm-kv anchor=smollm2`` (or ``anchor_path=FOLDER``, ``file=studies/calm_kv_real.yaml``):
``m_B`` is the anchor fine-tuned on Numeric-Arithmetic, ``m_A`` a small Llama over the anchor's tokenizer
trained on KV-Substitution over all keys, and the bridge (the paper's default wiring) learns KV-Arithmetic
over the 20% composition keys only. Every row is scored on all keys, the 20% and the held-out 80%, for each
seed; the tables give the mean over seeds with a t-interval. The stages are study-engine units
(:mod:`graftkit.study.calm_kv_real_stages`), so a rerun skips what is built and resumes what was killed.

:func:`study_header`, :func:`build_models` and :func:`compose_and_score` serve every real-anchor study
(the language study of :mod:`graftkit.study.calm_lang` too); only the pre-check is the key-value study's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftkit.compose.wiring import Connection
from graftkit.study.calm_kv_real_settings import CalmKVRealSettings
from graftkit.study.calm_kv_real_stages import (
    LORA,
    bridge_units,
    lora_unit,
    model_units,
    precheck_unit,
    score_units,
    tag,
    wiring,
)
from graftkit.study.calm_kv_stages import _run, stage_seconds
from graftkit.study.calm_real_settings import RealAnchorSettings
from graftkit.study.engine import Backend, LocalBackend, Unit, UnitStore, mean_ci, run_info
from graftkit.study.model_units import model_ref

Log = Callable[[str], None]

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Student-t 97.5% quantiles by degrees of freedom (a 95% interval over a few seeds); 1.96 beyond."""


def anchor_folder(settings: RealAnchorSettings, say: Log) -> Path:
    """``anchor_path``, or the zoo import named by ``anchor`` (converted once, then cached)."""
    from graftkit.zoo.smollm2 import IMPORTS

    if settings.anchor_path is not None:
        return Path(settings.anchor_path)
    return IMPORTS.get(settings.anchor)(log=say)


def seed_ci(values: list[float]) -> dict[str, Any]:
    """Mean over seeds and its 95% t-interval, with the per-seed values."""
    mean, low, high = mean_ci(values, z=T_975.get(len(values) - 1, 1.96))
    return {"mean": round(mean, 2), "low": round(low, 2), "high": round(high, 2), "per_seed": values}


Key = tuple[str, int]
"""A stage of one replicate: (label, seed)."""


def _per_seed(
    settings: RealAnchorSettings, backend: Backend, store: UnitStore, say: Log, units: dict[Key, Unit], what: str
) -> dict[Key, Path]:
    """Run units keyed by (label, seed); returns (label, seed) → the folder holding each one's output."""
    folders = _run(backend, store, say, {tag(*key): u for key, u in units.items()}, f"{settings.DATA.title}: {what}")
    return {key: folders[tag(*key)] for key in units}


def _of_seed(stages: dict[Key, Any], seed: int) -> dict[str, Any]:
    return {label: value for (label, s), value in stages.items() if s == seed}


def run_real_study(
    settings: CalmKVRealSettings | None = None,
    *,
    backend: Backend | None = None,
    store: UnitStore | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Build (or find in ``store``) every model, bridge and score of every seed; return the result dict
    (see :mod:`graftkit.study.calm_kv_real_report` for its tables). With ``precheck_only``, build only
    what the pre-check needs (``m_B`` of the first seed, or nothing) and return its numbers."""
    from graftkit.zoo.train import _quiet_hub

    with _quiet_hub():  # per-file load bars of every unit are noise
        return _run_study(settings or CalmKVRealSettings(), backend or LocalBackend(), store or UnitStore(), log)


def study_header(settings: RealAnchorSettings, anchor: Path, connections: list[Connection]) -> dict[str, Any]:
    """The result's opening entries: the study, run info, resolved settings, anchor and wiring."""
    result: dict[str, Any] = {"study": settings.DATA.study, "run_info": run_info()}
    result["settings"] = settings.model_dump(mode="json")
    return result | {"anchor": str(anchor), "connections": [c.model_dump() for c in connections]}


def build_models(
    settings: RealAnchorSettings, backend: Backend, store: UnitStore, say: Log, anchor: Path
) -> dict[Key, Path]:
    """Every frozen model of every seed (``m_B``, ``m_A`` and the ablations' ``m_A``), built or found."""
    anchor_ref = model_ref(anchor)
    units = {(lab, s): u for s in settings.seeds for lab, u in model_units(settings, s, anchor_ref).items()}
    return _per_seed(settings, backend, store, say, units, "models")


def compose_and_score(
    settings: RealAnchorSettings,
    backend: Backend,
    store: UnitStore,
    say: Log,
    models: dict[Key, Path],
    connections: list[Connection],
) -> dict[str, Any]:
    """The bridges and LoRA of every seed over ``models``, then every row's scores; the result entries of
    :func:`_collect` (scores over seeds, seconds, sizes, paths)."""
    seeds = settings.seeds
    refs = {s: {lab: model_ref(folder) for lab, folder in _of_seed(models, s).items()} for s in seeds}
    trained = {(lab, s): u for s in seeds for lab, u in bridge_units(settings, s, refs[s], connections).items()}
    if "lora" in settings.ablations:
        trained |= {(LORA, s): lora_unit(settings, s, refs[s], connections) for s in seeds}
    built = _per_seed(settings, backend, store, say, trained, "bridges and LoRA")
    for s in seeds:
        refs[s] |= {LORA: model_ref(built[(LORA, s)])} if (LORA, s) in built else {}
    bridges = {s: {lab: f for lab, f in _of_seed(built, s).items() if lab != LORA} for s in seeds}
    scoring = {(lab, s): u for s in seeds for lab, u in score_units(settings, s, refs[s], bridges[s]).items()}
    done = backend.map(list(scoring.values()), store, progress=f"{settings.DATA.title}: scores")
    scored = dict(zip(scoring, done, strict=True))
    seconds = {key: store.path(unit) for key, unit in scoring.items()}
    return _collect(settings, models | built, scored, seconds)


def _run_study(settings: CalmKVRealSettings, backend: Backend, store: UnitStore, log: Log | None) -> dict[str, Any]:
    say = log or (lambda line: None)
    anchor = anchor_folder(settings, say)
    conns = wiring(settings, anchor)  # checked against both models before any training
    result, first = study_header(settings, anchor, conns), settings.seeds[0]

    def precheck(model: Path) -> dict[str, Any]:
        unit = precheck_unit(settings, model_ref(model), conns)
        found = backend.map([unit], store, progress="calm-kv real: pre-check")[0]
        return {**found, "model": str(model), "seconds": stage_seconds(store.path(unit))}

    if settings.precheck_only:
        if settings.precheck.model == "anchor":
            return result | {"precheck": precheck(anchor)}
        m_b = model_units(settings, first, model_ref(anchor))["m_B"]
        return result | {
            "precheck": precheck(_per_seed(settings, backend, store, say, {("m_B", first): m_b}, "m_B")[("m_B", first)])
        }
    models = build_models(settings, backend, store, say, anchor)
    result["precheck"] = precheck(anchor if settings.precheck.model == "anchor" else models[("m_B", first)])
    return result | compose_and_score(settings, backend, store, say, models, conns)


def _collect(
    settings: RealAnchorSettings,
    folders: dict[Key, Path],
    scored: dict[Key, dict[str, Any]],
    score_dirs: dict[Key, Path],
) -> dict[str, Any]:
    """Scores over seeds (mean, t-interval, per seed), the seconds of every stage, sizes and paths."""
    import json

    first = settings.seeds[0]
    rows = list(dict.fromkeys(label for label, _ in scored))
    scores = {
        row: {
            d: seed_ci([scored[(row, s)]["scores"][d] for s in settings.seeds]) for d in scored[(row, first)]["scores"]
        }
        for row in rows
    }
    seconds: dict[str, dict[str, float]] = {}
    for (label, seed), folder in [*folders.items(), *(((f"score: {k[0]}", k[1]), v) for k, v in score_dirs.items())]:
        seconds.setdefault(label, {})[str(seed)] = stage_seconds(folder)
    params = {
        lab: json.loads((folders[(lab, first)] / "training.json").read_text())["params"] for lab in ("m_A", "m_B")
    }
    bridge = json.loads((folders[("CALM", first)] / "bridge.json").read_text())["parameters"]
    params |= {"bridge": bridge["bridge"], "bridge_percent_of_anchor": round(bridge["percent_of_anchor"], 2)}
    if (LORA, first) in folders:
        lora = json.loads((folders[(LORA, first)] / "training.json").read_text())
        params |= {"lora_rank": lora["rank"], "lora_trainable": lora["trainable"]}
    return {
        "seeds": list(settings.seeds),
        "scores": scores,
        "seconds": seconds,
        "params": params,
        "n_examples": scored[("m_B", first)]["n"],
        "paths": {tag(lab, s): str(f) for (lab, s), f in folders.items()},
    }
