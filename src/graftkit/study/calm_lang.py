"""The CALM language study (Bansal et al. 2024, in the spirit of §4.2's low-resource languages) on a real anchor.

``graft study calm-lang`` (``file=studies/calm_lang.yaml``, ``anchor_path=FOLDER``, ``key=value``):

- a synthetic language (:mod:`graftkit.study.calm_lang_script`: a seeded, invertible transliteration of
  English into its own syllables) that ``m_A`` knows and ``m_B`` does not;
- ``m_B``: the anchor fine-tuned gently on English arithmetic word problems (:mod:`graftkit.study.calm_lang_data`);
- ``m_A``: a small Llama over the anchor's tokenizer, trained from scratch to translate the synthetic
  language into English (parallel text of the same problems, no answers);
- the bridge: the paper's default wiring, trained on a small set of the word problems written in the
  synthetic language and answered in English.

The stages, ablations (random and untrained ``m_A``, encoder mode, LoRA on ``m_B`` with the bridge's
parameter count and data), seeds and t-intervals are those of the key-value study on a real anchor
(:mod:`graftkit.study.calm_kv_real`), run as study-engine units, so a rerun skips what is built.
"""

from __future__ import annotations

from typing import Any

from graftkit.study.calm_kv_real import Log, anchor_folder, build_models, compose_and_score, study_header
from graftkit.study.calm_kv_real_stages import wiring
from graftkit.study.calm_lang_data import lang_tasks
from graftkit.study.calm_lang_report import finish
from graftkit.study.calm_lang_settings import CalmLangSettings
from graftkit.study.engine import Backend, LocalBackend, UnitStore


def run_lang_study(
    settings: CalmLangSettings | None = None,
    *,
    backend: Backend | None = None,
    store: UnitStore | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Build (or find in ``store``) every model, bridge and score of every seed; return the result with its
    summary (``table1``: ``{translation | english_task | synthetic_task: {m_A, m_B, calm}}`` in %, see
    :mod:`graftkit.study.calm_lang_report`)."""
    from graftkit.zoo.train import _quiet_hub

    settings = settings or CalmLangSettings()
    backend, store, say = backend or LocalBackend(), store or UnitStore(), log or (lambda line: None)
    with _quiet_hub():  # per-file load bars of every unit are noise
        anchor = anchor_folder(settings, say)
        conns = wiring(settings, anchor)  # checked against both models before any training
        result = study_header(settings, anchor, conns) | {"examples": examples(settings)}
        models = build_models(settings, backend, store, say, anchor)
        return finish(result | compose_and_score(settings, backend, store, say, models, conns))


def examples(settings: CalmLangSettings) -> dict[str, dict[str, str]]:
    """One test example of each dataset in the first seed's language, with the English it encodes."""
    out = {}
    for name, task in lang_tasks(settings.lang(settings.seeds[0]), settings.question).items():
        example = task.examples("test", 1)[0]
        out[name] = {"prompt": example.prompt, "answer": example.answer, "english": task.english(example.prompt)}
    return out
