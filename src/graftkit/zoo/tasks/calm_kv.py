"""The key-value datasets of CALM (Bansal et al. 2024, §4.1), over a seeded key table.

Keys are random strings of 2–6 letters, each mapped to a unique integer value. Expressions join
3–6 operands with ``+``, ``-`` and ``*`` (ordinary precedence). Three datasets:

- KV-Substitution: keys → the same expression with values (``"ab+cde"`` → ``"12+7"``).
- Numeric-Arithmetic: values → result (``"12+7"`` → ``"19"``).
- KV-Arithmetic: keys → result (``"ab+cde"`` → ``"19"``).

The table's keys are split 20% / 80% (:attr:`KVTable.train_keys`, :attr:`KVTable.other_keys`):
each key dataset comes in three registered variants drawing keys from all, the 20% or the 80%.
Build other tables with :class:`KVConfig` and the task classes directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from graftkit.zoo.tasks._draw import word
from graftkit.zoo.tasks.base import TASKS, Kind, Task

KeySet = Literal["all", "train", "other"]


@dataclass(frozen=True)
class KVConfig:
    """What defines a key table and its expressions."""

    seed: int = 0
    n_keys: int = 50
    max_value: int = 99
    min_terms: int = 3
    max_terms: int = 6
    ops: str = "+-*"
    train_fraction: float = 0.2
    unique_values: bool = True
    """False draws each key's value independently (keys may share one), so ``max_value`` can be
    smaller than ``n_keys``, e.g. single-digit values for many keys."""

    def cache_inputs(self) -> dict[str, object]:
        """The fields as a dict for cache keys; ``unique_values`` only when off, so tables that
        existed before the field keep their keys."""
        fields = dict(self.__dict__)
        if fields["unique_values"]:
            del fields["unique_values"]
        return fields


class KVTable:
    """A seeded table of unique keys (2–6 letters) → values in ``1..max_value`` (unique unless
    ``config.unique_values`` is off)."""

    def __init__(self, config: KVConfig = KVConfig()) -> None:
        if config.unique_values and config.n_keys > config.max_value:
            raise ValueError(f"n_keys={config.n_keys} unique values need max_value >= n_keys (or unique_values=False)")
        rng = random.Random(f"kv-table/{config.seed}")
        keys: list[str] = []
        while len(keys) < config.n_keys:
            k = word(rng, 2, 6)
            if k not in keys:
                keys.append(k)
        if config.unique_values:
            values = rng.sample(range(1, config.max_value + 1), config.n_keys)
        else:
            values = [rng.randint(1, config.max_value) for _ in keys]
        self.config = config
        self.values: dict[str, int] = dict(zip(keys, values, strict=True))
        n_train = round(config.train_fraction * config.n_keys)
        # The key order is already random, so the first n_train keys are a random 20%.
        self.train_keys: tuple[str, ...] = tuple(keys[:n_train])
        self.other_keys: tuple[str, ...] = tuple(keys[n_train:])

    def keys(self, which: KeySet) -> tuple[str, ...]:
        if which == "all":
            return self.train_keys + self.other_keys
        return self.train_keys if which == "train" else self.other_keys


def _join(operands: list[str], ops: list[str]) -> str:
    return operands[0] + "".join(op + x for op, x in zip(ops, operands[1:], strict=True))


def _evaluate(expr: str) -> int:
    # Only digits and + - * reach here (built by _expression), so eval is a plain calculator.
    return eval(expr, {"__builtins__": {}}, {})  # noqa: S307


class _KVTask(Task):
    kind: Kind = "calm"

    def __init__(self, config: KVConfig = KVConfig(), keys: KeySet = "all", name: str | None = None) -> None:
        self.config, self.key_set = config, keys
        if name is not None:
            self.name = name

    @cached_property
    def table(self) -> KVTable:
        return KVTable(self.config)

    def _ops(self, rng: random.Random) -> list[str]:
        """Operators for one expression (one fewer than its operands)."""
        n_terms = rng.randint(self.config.min_terms, self.config.max_terms)
        return [rng.choice(self.config.ops) for _ in range(n_terms - 1)]

    def _keys_expr(self, rng: random.Random) -> tuple[str, str]:
        """A key expression and the same expression with values."""
        ops = self._ops(rng)
        keys = [rng.choice(self.table.keys(self.key_set)) for _ in range(len(ops) + 1)]
        return _join(keys, ops), _join([str(self.table.values[k]) for k in keys], ops)


class KVSubstitution(_KVTask):
    """Keys → the same expression with each key replaced by its value."""

    name = "kv_substitution"
    instruction = "sub"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        return self._keys_expr(rng)


class NumericArithmetic(_KVTask):
    """Values (any integers in ``1..max_value``) → the expression's result."""

    name = "numeric_arithmetic"
    instruction = "calc"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        ops = self._ops(rng)
        expr = _join([str(rng.randint(1, self.config.max_value)) for _ in range(len(ops) + 1)], ops)
        return expr, str(_evaluate(expr))


class KVArithmetic(_KVTask):
    """Keys → the result of the expression with their values."""

    name = "kv_arithmetic"
    instruction = "calc"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        expr, numeric = self._keys_expr(rng)
        return expr, str(_evaluate(numeric))


TASKS.add("numeric_arithmetic", NumericArithmetic())
for _cls in (KVSubstitution, KVArithmetic):
    TASKS.add(_cls.name, _cls())
    TASKS.add(f"{_cls.name}_k20", _cls(keys="train", name=f"{_cls.name}_k20"))
    TASKS.add(f"{_cls.name}_k80", _cls(keys="other", name=f"{_cls.name}_k80"))
