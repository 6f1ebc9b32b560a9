"""Task families: registered by kind, deterministic, with disjoint splits; the CALM key split."""

from __future__ import annotations

import random

import pytest

from graftkit.errors import UnknownNameError
from graftkit.zoo.tasks import TASKS, KVConfig, KVTable, pretrain_texts, tasks_of_kind
from graftkit.zoo.tasks.calm_kv import KVArithmetic, KVSubstitution

CHAT_KINDS = ("chat_held_in", "chat_held_out")  # BPE chat tasks: tests/zoo/test_chat_tasks.py
ALL = [n for n in TASKS.names() if TASKS.get(n).kind not in CHAT_KINDS]
N = 40


def test_kinds_have_enough_families():
    assert len(tasks_of_kind("held_in")) >= 8
    assert len(tasks_of_kind("held_out")) >= 4
    assert len(tasks_of_kind("instruct")) >= 6
    assert {"kv_substitution", "numeric_arithmetic", "kv_arithmetic"} <= set(tasks_of_kind("calm"))
    assert tasks_of_kind("pretrain") == ["pretrain_skills", "pretrain_text"]
    assert tasks_of_kind("auxiliary") == ["copy_span"]
    with pytest.raises(UnknownNameError, match="held_in"):
        tasks_of_kind("held-in")  # type: ignore[arg-type]


def test_families_and_instructions_disjoint_across_kinds():
    groups = [tasks_of_kind(k) for k in ("held_in", "held_out", "instruct")]
    instructions = [{TASKS.get(n).instruction for n in g} for g in groups]
    assert not (instructions[0] & instructions[1])
    assert not (instructions[0] & instructions[2])
    assert not (instructions[1] & instructions[2])


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name):
    task = TASKS.get(name)
    assert task.examples("train", N, seed=3) == task.examples("train", N, seed=3)
    assert task.examples("train", N, seed=3) != task.examples("train", N, seed=4)
    rng_a, rng_b = random.Random(7), random.Random(7)
    assert [task.draw("test", rng_a) for _ in range(5)] == [task.draw("test", rng_b) for _ in range(5)]


@pytest.mark.parametrize("name", ALL)
def test_splits_disjoint(name):
    task = TASKS.get(name)
    n = 10 if task.kind == "pretrain" else N
    prompts = {s: {e.prompt for e in task.examples(s, n)} for s in ("train", "validation", "test")}
    assert len(prompts["train"]) == n
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    assert task.split_of(task.draw("test", random.Random(1)).prompt) == "test"


FORMATTED = [n for n in ALL if TASKS.get(n).kind not in ("pretrain", "auxiliary")]


@pytest.mark.parametrize("name", FORMATTED)
def test_prompt_format_and_answer(name):
    task = TASKS.get(name)
    for ex in task.examples("validation", N):
        assert ex.prompt.startswith(task.instruction + "\n") and ex.prompt.endswith("\n=")
        assert ex.answer and "\n" not in ex.answer


def test_held_in_answers_are_right():
    ex = {n: TASKS.get(n).examples("test", 20) for n in tasks_of_kind("held_in")}
    for e in ex["modulo"]:
        a, m = e.prompt.split("\n")[1].split("%")
        assert int(e.answer) == int(a) % int(m) and 100 % int(m) == 0
    for e in ex["addition"]:
        a, b = e.prompt.split("\n")[1].split("+")
        assert int(e.answer) == int(a) + int(b)
    for e in ex["reversal"]:
        assert e.answer == e.prompt.split("\n")[1][::-1]
    for e in ex["key_lookup"]:
        pairs, key = e.prompt.split("\n")[1].split(";")
        assert e.answer == f"{key}={dict(p.split('=') for p in pairs.split(','))[key]}"


def test_kv_table_split_is_disjoint_20_80():
    table = KVTable(KVConfig(n_keys=50))
    assert len(table.train_keys) == 10 and len(table.other_keys) == 40
    assert not set(table.train_keys) & set(table.other_keys)
    assert set(table.keys("all")) == set(table.values)
    assert len(set(table.values.values())) == 50  # unique values
    assert all(2 <= len(k) <= 6 and k.isalpha() for k in table.values)
    assert KVTable(KVConfig(n_keys=50)).values == table.values  # seeded


def test_kv_table_shared_values_allow_many_keys_per_digit():
    with pytest.raises(ValueError, match="unique_values=False"):
        KVTable(KVConfig(n_keys=80, max_value=9))
    shared = KVConfig(n_keys=80, max_value=9, unique_values=False)
    table = KVTable(shared)
    assert set(table.values.values()) == set(range(1, 10)) and len(table.values) == 80
    assert list(table.values) == list(KVTable(KVConfig(n_keys=80, max_value=99)).values)  # same keys
    # Cache keys of tables from before the option existed do not change; shared ones differ.
    assert "unique_values" not in KVConfig().cache_inputs()
    assert shared.cache_inputs()["unique_values"] is False


@pytest.mark.parametrize("cls", [KVSubstitution, KVArithmetic])
def test_kv_tasks_draw_from_their_key_set(cls):
    table = KVTable()
    for key_set, allowed in (("train", table.train_keys), ("other", table.other_keys)):
        task = cls(keys=key_set)
        for ex in task.examples("train", 30):
            expr = ex.prompt.split("\n")[1]
            keys = expr.replace("+", " ").replace("-", " ").replace("*", " ").split()
            assert 3 <= len(keys) <= 6
            assert set(keys) <= set(allowed)


def test_kv_substitution_and_arithmetic_agree():
    table = KVTable()
    sub, arith = KVSubstitution(keys="all"), KVArithmetic(keys="all")
    rng_a, rng_b = random.Random(0), random.Random(0)
    for _ in range(20):
        (expr, numeric), (expr2, result) = sub.sample(rng_a), arith.sample(rng_b)
        assert expr == expr2
        keys = expr.replace("+", " ").replace("-", " ").replace("*", " ").split()
        assert numeric.replace("+", " ").replace("-", " ").replace("*", " ").split() == [
            str(table.values[k]) for k in keys
        ]
        assert eval(numeric) == int(result)  # noqa: S307


def test_copy_span_repeats_an_unformatted_string():
    # Nothing may mark where the repetition starts: with a format, a model copies by position
    # and never grows the induction circuit key_lookup needs (docs/zoo.md).
    for ex in TASKS.get("copy_span").examples("train", N):
        assert ex.prompt == ex.answer and 6 <= len(ex.prompt) <= 24 and ex.prompt.isalnum()
        assert ex.prompt.lower() == ex.prompt


def test_pretrain_texts_deterministic_and_varied():
    a, b = pretrain_texts(seed=1), pretrain_texts(seed=1)
    docs = [next(a) for _ in range(50)]
    assert docs == [next(b) for _ in range(50)]
    assert len(set(docs)) == 50
    assert any(c.isdigit() for c in "".join(docs)) and any(c.isupper() for c in "".join(docs))


@pytest.mark.parametrize("name", [n for n in ALL if TASKS.get(n).kind != "pretrain"])
def test_enough_distinct_examples_for_evaluation(name):
    assert len(TASKS.get(name).examples("test", 300)) == 300
