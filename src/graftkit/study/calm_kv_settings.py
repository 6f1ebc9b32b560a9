"""Settings of the CALM key-value study: the models, data, training and scoring knobs its unit keys hash."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from graftkit.compose.recipe import OptimRecipe, apply_overrides
from graftkit.compose.wiring import Connection
from graftkit.zoo.tasks.calm_kv import KVConfig
from graftkit.zoo.train import TrainConfig


class CalmKVSettings(BaseModel):
    """Everything that decides the study's models, data and scores (the study units' keys hash these).

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
    unique_values: bool = True
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
            unique_values=self.unique_values,
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


def load_settings(quick: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> CalmKVSettings | Any:
    """The default (or ``quick``) settings with dotted ``key=value`` overrides (``bridge.steps=800``).

    Overrides that set ``anchor``, ``anchor_path`` or ``file`` select the real-anchor study and return
    its :class:`~graftkit.study.calm_kv_real_settings.CalmKVRealSettings` instead.
    """
    from graftkit.study.calm_kv_real_settings import load_real_settings, wants_real

    if wants_real(overrides):
        return load_real_settings(quick, overrides)
    base = CalmKVSettings.quick() if quick else CalmKVSettings()
    return CalmKVSettings.model_validate(apply_overrides(base.model_dump(mode="json"), overrides))
