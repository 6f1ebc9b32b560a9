"""Evaluate a model on registered tasks: the library entry points behind ``graft eval``."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import PreTrainedTokenizerBase

from graftkit.errors import CheckpointError
from graftkit.evaluate.generate import DEFAULT_MARGIN, exact_match
from graftkit.evaluate.loglik import gold_loss
from graftkit.evaluate.results import TaskScore, save_scores, scores_table
from graftkit.registry import Registry
from graftkit.zoo.tasks.base import Split, Task


def default_registry() -> Registry[Any]:
    """The zoo's task registry with every task family imported."""
    import graftkit.zoo.tasks as zoo_tasks

    registry = getattr(zoo_tasks, "TASKS", None)
    if registry is None:  # the families package has no index yet; the bare registry still works
        from graftkit.zoo.tasks.base import TASKS as registry
    return registry


def get_task(name: str, registry: Registry[Any] | None = None) -> Task:
    """Look a task up by name (unknown names fail with the valid list and closest match).

    Registry entries may be :class:`Task` instances or ``Task`` subclasses (instantiated here).
    """
    entry = (registry or default_registry()).get(name)
    return entry() if isinstance(entry, type) else entry


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local folder (never runs remote code).

    Args:
        path: a folder written by ``save_pretrained``.
        device: where to put the model; see :func:`pick_device`.
        dtype: weights are cast to this type.
        tokenizer: a tokenizer, or a folder to load it from, when ``path`` has none.

    Raises:
        CheckpointError: the folder or its tokenizer cannot be read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model folder {str(path)!r} does not exist; pass a save_pretrained folder")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load a causal LM from {str(path)!r}: {err}") from err
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return model.to(pick_device(device)).eval(), tokenizer
    tok_path = Path(tokenizer) if tokenizer is not None else path
    try:
        tok = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot load a tokenizer from {str(tok_path)!r} ({err}); pass tokenizer=<folder with one>"
        ) from err
    return model.to(pick_device(device)).eval(), tok


def evaluate_model(
    model_or_path: str | Path | torch.nn.Module,
    tasks: Sequence[str],
    split: Split = "test",
    n: int = 200,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    seed: int = 0,
    *,
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
    registry: Registry[Any] | None = None,
    prepend_bos: bool | None = None,
    max_new_tokens: int | None = None,
    with_loss: bool = True,
    label: str | None = None,
) -> list[TaskScore]:
    """Exact-match accuracy (and gold-answer loss) of a model on each task.

    Args:
        model_or_path: a ``save_pretrained`` folder, or a loaded causal LM (then ``tokenizer``
            is required, and the model stays on its device unless ``device`` is given).
        tasks: registered task names; all are checked before the model is loaded.
        split: which split to draw examples from.
        n: examples per task, the same ones for the same (task, split, n, seed).
        batch_size: prompts per forward pass.
        device: see :func:`pick_device`.
        seed: picks the examples; decoding is greedy and needs none.
        tokenizer: a tokenizer, or a folder to load it from.
        registry: where task names are looked up (default: the zoo's).
        prepend_bos: encode prompts as ``bos + prompt``, as the zoo trains; None: each task's
            own setting (``Task.prepend_bos``: chat prompts carry their own start token).
        max_new_tokens: default: longest answer of each task + a margin.
        with_loss: also measure the mean per-token loss of the gold answers.
        label: the model name recorded in the scores (default: the path or config name).

    Returns:
        One :class:`TaskScore` per task, in the order given.
    """
    resolved = [(name, get_task(name, registry)) for name in tasks]
    if isinstance(model_or_path, (str, Path)):
        model, tok = load_model(model_or_path, device=device, tokenizer=tokenizer)
        label = label or str(model_or_path)
    else:
        if tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer: pass tokenizer=")
        model = model_or_path if device is None else model_or_path.to(torch.device(device))
        tok = tokenizer if isinstance(tokenizer, PreTrainedTokenizerBase) else _load_tokenizer(tokenizer)
        label = label or _model_label(model)

    was_training = model.training
    model.eval()
    scores = []
    try:
        with torch.inference_mode():
            for name, task in resolved:
                examples = task.examples(split, n, seed=seed)
                bos = getattr(task, "prepend_bos", True) if prepend_bos is None else prepend_bos
                preds = exact_match(
                    model,
                    tok,
                    examples,
                    batch_size=batch_size,
                    max_new_tokens=max_new_tokens,
                    prepend_bos=bos,
                    margin=getattr(task, "answer_margin", DEFAULT_MARGIN),
                )
                loss = gold_loss(model, tok, examples, batch_size=batch_size, prepend_bos=bos) if with_loss else None
                matches = getattr(task, "matches", None)
                correct = sum(matches(p.output, p.answer) if matches else p.correct for p in preds)
                scores.append(TaskScore(name, len(preds), correct, split=split, model=label, loss=loss))
    finally:
        model.train(was_training)
    return scores


def run_eval(
    model: str,
    tasks: Sequence[str],
    split: Split = "test",
    n: int = 200,
    json_out: Path | None = None,
    *,
    batch_size: int = 64,
    device: str | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> list[TaskScore]:
    """``graft eval MODEL --tasks a,b,c [--json out.json]``: evaluate, print a table, save JSON.

    The JSON file holds the scores and the run info (split, n, seed, versions).
    """
    scores = evaluate_model(model, tasks, split=split, n=n, batch_size=batch_size, device=device, seed=seed)
    (console or Console()).print(scores_table(scores, title=f"{model} · {split} · n={n} · seed={seed}"))
    if json_out is not None:
        save_scores(scores, json_out, meta=run_info(split=split, n=n, seed=seed, batch_size=batch_size))
    return scores


def run_info(**params: Any) -> dict[str, Any]:
    """The parameters of a run plus the versions that produced it."""
    import transformers

    import graftkit

    return {
        **params,
        "graftkit": graftkit.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def _load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path), trust_remote_code=False)


def _model_label(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", "") or type(model).__name__
