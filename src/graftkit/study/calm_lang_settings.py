"""Settings of the CALM language study (``graft study calm-lang``), in the spirit of the paper's §4.2.

The defaults are the CPU preset (``studies/calm_lang.yaml`` gives its estimated cost). ``m_B`` is the
anchor (SmolLM2-135M-Instruct by default) fine-tuned gently on English word problems; ``m_A`` is a small
Llama over the anchor's tokenizer, trained from scratch to translate the synthetic language into English;
the bridge (the paper's default wiring) learns the word problems written in the synthetic language from a
small set. Everything is checked here, before any model is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field, field_validator

from graftkit.compose.recipe import OptimRecipe
from graftkit.study.calm_lang_data import DATASETS, LangConfig
from graftkit.study.calm_real_settings import (
    RealAnchorSettings,
    StudyData,
    load_file_settings,
    need_slot,
    tiny_fields,
)
from graftkit.zoo.train import TrainConfig


class CalmLangSettings(RealAnchorSettings):
    """Everything that decides the language study's models, data and scores (unit keys hash these)."""

    DATA: ClassVar[StudyData] = StudyData(
        "calm_lang", "calm-lang", "translation", "english_task", "synthetic_task", DATASETS
    )
    """m_A on translation, m_B on the English problems, bridges on the problems in the synthetic language."""

    max_number: int = Field(20, ge=2, le=99, description="operands are 1..max_number, written as English words")
    question: str = Field("{problem}", description="the chat question; {problem} is replaced by the problem")

    augment_train: TrainConfig = TrainConfig(steps=1500, batch_size=32, seq_len=96, lr=2e-3, warmup_steps=100)
    anchor_train: TrainConfig = TrainConfig(steps=400, batch_size=16, seq_len=96, lr=3e-4, warmup_steps=40)
    bridge: OptimRecipe = OptimRecipe(lr=1e-3, steps=1000, warmup=100, batch_size=16)
    """1,000 steps: after 300 the bridge had not fitted its 1,000 problems (loss 0.93, 7 % on test problems);
    after 1,000, loss 0.06 and 43 % (seed 0, docs/results/calm_kv.md)."""
    n_composition: int = Field(1000, ge=1, description="distinct synthetic-language problems (train split) at most")
    max_new_tokens: int = Field(24, ge=1, description="room for a translation (~19 SmolLM2 tokens) and eos")

    @field_validator("question")
    @classmethod
    def _has_slot(cls, question: str) -> str:
        return need_slot(question, "problem", "{problem}")

    def lang(self, seed: int) -> LangConfig:
        """The language (script) and problems of one replicate."""
        return LangConfig(seed=seed, max_number=self.max_number, ops=self.ops)

    def data_spec(self, seed: int) -> dict[str, Any]:
        """``{"lang": ...}``: one replicate's language and problems, as unit inputs."""
        import dataclasses

        return {"lang": dataclasses.asdict(self.lang(seed))}

    @classmethod
    def quick(cls, **fields: Any) -> CalmLangSettings:
        """A tiny variant for tests: a few steps of an 8-layer, hidden-16 m_A, a handful of examples, two seeds."""
        return cls.model_validate({**tiny_fields(), "max_number": 9, **fields})


def load_lang_settings(quick: bool = False, overrides: Sequence[str] = ()) -> CalmLangSettings:
    """The language study's settings: defaults (or :meth:`~CalmLangSettings.quick`), then the YAML file
    that a ``file=PATH`` override names, then the other dotted ``key=value`` overrides.

    Raises:
        RecipeError: the file cannot be read, or a field is wrong (each named by its dotted path).
    """
    base = CalmLangSettings.quick() if quick else CalmLangSettings()
    return load_file_settings(CalmLangSettings, base, overrides, "The calm-lang settings have errors")
