"""evaluate_model and run_eval end to end on tiny tasks and models."""

from __future__ import annotations

import pytest
from rich.console import Console

from graftkit.errors import CheckpointError, UnknownNameError
from graftkit.evaluate import runner
from graftkit.evaluate.results import load_scores
from graftkit.registry import Registry

TASKS = ["tiny_add", "tiny_echo"]


def _outputs(registry, n, wrong=False):
    out = {}
    for name in TASKS:
        for e in registry.get(name).examples("test", n, seed=0):
            out[e.prompt] = ("z" if wrong else "") + e.answer
    return out


@pytest.mark.parametrize("wrong", [False, True])
def test_evaluate_model_scores_forced_models(tokenizer, registry, forced_lm, wrong):
    model = forced_lm(tokenizer, _outputs(registry, 15, wrong=wrong))
    model.train()
    scores = runner.evaluate_model(model, TASKS, n=15, batch_size=4, tokenizer=tokenizer, registry=registry)
    assert [s.task for s in scores] == TASKS
    assert [(s.n, s.correct) for s in scores] == [(15, 0 if wrong else 15)] * 2
    assert all((s.loss > 5.0) if wrong else (s.loss < 1e-6) for s in scores)
    assert all(s.split == "test" and s.metric == "exact_match" for s in scores)
    assert model.training  # the caller's mode is restored


def test_unknown_task_fails_before_loading(registry):
    with pytest.raises(UnknownNameError, match="tiny_add"):
        runner.evaluate_model("/nonexistent/model", ["tiny_ad"], registry=registry)


def test_missing_model_folder_is_a_checkpoint_error(tmp_path, registry):
    with pytest.raises(CheckpointError, match="does not exist"):
        runner.evaluate_model(tmp_path / "nope", TASKS, registry=registry)


def test_missing_tokenizer_is_a_checkpoint_error_unless_given(tmp_path, registry, llama, tokenizer):
    llama.save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="tokenizer"):
        runner.evaluate_model(tmp_path / "m", TASKS, registry=registry)
    scores = runner.evaluate_model(tmp_path / "m", TASKS[:1], n=2, tokenizer=tokenizer, registry=registry)
    assert scores[0].n == 2


def test_registry_entries_may_be_classes(registry):
    cls = type(registry.get("tiny_add"))
    reg: Registry[type] = Registry("task")
    reg.add("tiny_add", cls)
    assert isinstance(runner.get_task("tiny_add", reg), cls)


def test_run_eval_loads_prints_and_writes_json(tmp_path, monkeypatch, tokenizer, registry, llama):
    path = tmp_path / "m"
    llama.save_pretrained(path)
    tokenizer.save_pretrained(path)
    monkeypatch.setattr(runner, "default_registry", lambda: registry)
    console = Console(record=True, width=200)
    out = tmp_path / "out.json"
    scores = runner.run_eval(str(path), TASKS, n=4, json_out=out, console=console, device="cpu")
    assert load_scores(out) == scores
    text = console.export_text()
    assert "tiny_add" in text and "tiny_echo" in text
    # Loading from the folder gives what the in-memory model gives.
    in_memory = runner.evaluate_model(llama, TASKS, n=4, tokenizer=tokenizer, registry=registry)
    assert [s.model for s in scores] == [str(path)] * 2
    assert [(s.correct, s.loss) for s in scores] == [(s.correct, pytest.approx(s.loss, abs=1e-4)) for s in in_memory]


def test_default_registry_is_the_zoos():
    import graftkit.zoo.tasks as zoo_tasks

    assert runner.default_registry() is zoo_tasks.TASKS
