"""Chat task families for a real LM: ChatML prompts, bare answers, flexible answer extraction."""

from __future__ import annotations

import pytest

from graftkit.zoo.tasks import TASKS, tasks_of_kind
from graftkit.zoo.tasks.chat import chat_prompt, extract_answer


def test_eight_held_in_families_and_held_out_ones():
    held_in, held_out = tasks_of_kind("chat_held_in"), tasks_of_kind("chat_held_out")
    assert len(held_in) == 8 and len(held_out) >= 4
    assert not set(held_in) & set(held_out)


@pytest.mark.parametrize("name", tasks_of_kind("chat_held_in") + tasks_of_kind("chat_held_out"))
def test_prompts_are_chat_turns_and_splits_are_disjoint(name):
    task = TASKS.get(name)
    test, val = task.examples("test", 64), task.examples("validation", 32)
    train = {task.draw("train", __import__("random").Random(i)).prompt for i in range(200)}
    assert not {e.prompt for e in test} & train and not {e.prompt for e in val} & train
    example = test[0]
    assert example.prompt.startswith("<|im_start|>user\n") and example.prompt.endswith("<|im_start|>assistant\n")
    assert example.answer and example.answer == example.answer.strip()
    assert task.matches(example.answer, example.answer) and not task.prepend_bos


def test_chat_prompt_is_chatml_without_a_system_turn():
    assert chat_prompt("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("output", "answer", "right"),
    [
        ("88", "88", True),
        ("The value of k is 7.", "7", True),
        ("57 + 31 = 88", "88", True),
        ("57 + 31 = 89", "88", False),
        ("The word 'garden' backwards is 'nedrag'.", "nedrag", True),
        ("The capital of France is Paris.", "Paris", True),
        ("It is 1 2 5 9.", "1 2 5 9", True),
        ("1, 2, 5, 9", "1 2 5 9", True),
        ("9 5 2 1", "1 2 5 9", False),
        ("GARDEN", "GARDEN", True),
        ("garden", "GARDEN", False),
        ("", "7", False),
    ],
)
def test_answer_extraction(output, answer, right):
    assert (extract_answer(output, answer) == answer) is right
    assert TASKS.get("chat_addition").matches(output, answer) is right


def test_zoo_tasks_keep_strict_exact_match():
    assert TASKS.get("addition").matches(" 88 ", "88")
    assert not TASKS.get("addition").matches("57+31=88", "88")
