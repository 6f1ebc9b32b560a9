"""Training the zoo's models: pre-training, instruction tuning, experts and the multitask baseline.

Every run is one :func:`train_loop` over a batch function of the step number (see
:mod:`graftkit.zoo.data`), so data order is fixed by the seed and a run resumed from a checkpoint
ends with the same weights as one that never stopped. Outputs are ordinary ``save_pretrained``
folders (safetensors + ``tokenizer.json``) plus ``training.json``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from graftkit.zoo.data import draw_examples, encode_examples, text_batch
from graftkit.zoo.tasks import TASKS, tasks_of_kind

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CHECKPOINT = "checkpoint.pt"


class TrainConfig(BaseModel):
    """Hyperparameters of one training run (everything that changes the resulting weights)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    seq_len: int = Field(64, ge=8, description="tokens per packed row / longest example row")
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a fraction of lr (cosine)")
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0


class TrainStats(BaseModel):
    """What a finished :func:`train_loop` reports."""

    final_loss: float = Field(description="mean loss of the last 10% of steps")
    first_loss: float
    losses: list[float] = Field(description="mean loss per ~1/50 of the run")
    seconds: float
    tokens: int = Field(description="non-padding tokens processed in this process")
    tokens_per_s: float
    resumed_from: int = Field(description="step the run started at (0 unless resumed)")


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    import torch

    # No weight decay on norms and biases (1-d tensors), as usual for transformers.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-save leaves the previous checkpoint intact


def _progress(enabled: bool | None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if enabled is None:
        enabled = sys.stderr.isatty()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


def train_loop(
    model: PreTrainedModel,
    batch_at: Callable[[int], dict[str, torch.Tensor]],
    config: TrainConfig,
    *,
    work_dir: Path | str | None = None,
    checkpoint_every: int = 200,
    progress: bool | None = None,
    device: str | None = None,
    description: str = "train",
    bf16: bool | None = None,
) -> TrainStats:
    """Train ``model`` in place for ``config.steps`` steps on ``batch_at(step)``.

    AdamW, warm-up + cosine schedule (:func:`lr_at`), gradient clipping. With ``work_dir``, model,
    optimizer and step are saved to ``work_dir/checkpoint.pt`` every ``checkpoint_every`` steps and
    a run finding a checkpoint there continues from it (``work_dir`` is created if missing).

    Args:
        batch_at: step → ``input_ids``, ``attention_mask``, ``labels``, each ``(B, T)``.
        progress: show a rich progress bar; ``None`` shows it only on a terminal.
        device: ``"cuda"`` when available by default.
        bf16: bfloat16 autocast (weights, gradients and optimizer state stay float32); None: on
            CUDA only. On a CPU with AVX512-BF16 it makes a 135M-parameter step about 1.5x faster.
    """
    import torch

    device = device or default_device()
    torch.manual_seed(config.seed)
    model.to(device).train()
    optimizer = _optimizer(model, config)
    step, history = 0, []
    ckpt = Path(work_dir) / CHECKPOINT if work_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
    start, tokens, t0 = step, 0, time.perf_counter()
    use_bf16 = device.startswith("cuda") if bf16 is None else bf16
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=use_bf16)
    with _progress(progress) as bar:
        bar_task = bar.add_task(description, total=config.steps, completed=step, loss=float("nan"), tps=0.0)
        while step < config.steps:
            batch = {k: v.to(device) for k, v in batch_at(step).items()}
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            with autocast:
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            history.append(loss.item())
            tokens += int(batch["attention_mask"].sum())
            step += 1
            bar.update(bar_task, advance=1, loss=history[-1], tps=tokens / (time.perf_counter() - t0))
            if ckpt is not None and (step % checkpoint_every == 0 and step < config.steps):
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                _save_checkpoint(ckpt, {**state, "step": step, "history": history})
    seconds = time.perf_counter() - t0
    chunk = max(1, len(history) // 50)
    tail = history[-max(1, len(history) // 10) :]
    return TrainStats(
        final_loss=sum(tail) / len(tail),
        first_loss=history[0],
        losses=[sum(history[i : i + chunk]) / len(history[i : i + chunk]) for i in range(0, len(history), chunk)],
        seconds=seconds,
        tokens=tokens,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        resumed_from=start,
    )


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence transformers' per-file load/save progress bars (noise for models this small)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def load_model(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A zoo model (float32) and its tokenizer from a ``save_pretrained`` folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_hub():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    import graftkit

    return {
        "graftkit": graftkit.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, info: dict[str, Any]) -> None:
    """Write ``model.safetensors``, ``config.json``, the tokenizer and ``training.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _quiet_hub():
        model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def _examples_batches(
    families: Sequence[str], tokenizer: PreTrainedTokenizerBase, config: TrainConfig
) -> Callable[[int], dict[str, torch.Tensor]]:
    for name in families:
        TASKS.get(name)  # unknown names fail here, before any training

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        examples = draw_examples(families, config.batch_size, config.seed, step)
        return encode_examples(examples, tokenizer, config.seq_len)

    return batch_at


def _run(
    stage: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch_at: Callable[[int], dict[str, torch.Tensor]],
    config: TrainConfig,
    out_dir: Path,
    info: dict[str, Any],
    **loop: Any,
) -> TrainStats:
    loop.setdefault("description", f"{stage} {info.get('families') or ''}".strip())
    stats = train_loop(model, batch_at, config, **loop)
    params = sum(p.numel() for p in model.parameters())
    record = {"stage": stage, **info, "config": config.model_dump(), "params": params, **stats.model_dump()}
    save_model(model.cpu(), tokenizer, out_dir, {**record, "versions": _versions()})
    return stats


def pretrain(
    preset: str,
    config: TrainConfig,
    out_dir: Path,
    *,
    families: Sequence[str] | None = None,
    corpus: str = "pretrain_text",
    **loop: Any,
) -> TrainStats:
    """Train a fresh model of ``preset`` from scratch.

    By default on packed pre-training text (next-token loss everywhere) of ``corpus`` (a ``pretrain``
    task: ``pretrain_text``, or ``pretrain_skills`` with the held-in skills in running text); with ``families``, on
    those tasks' examples instead (loss on answers only), e.g. a CALM model that only knows its task.
    ``loop`` goes to :func:`train_loop` (``work_dir``, ``progress``, ``device``, ...).
    """
    from graftkit.zoo.presets import new_model
    from graftkit.zoo.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    model = new_model(preset, tokenizer, seed=config.seed)
    if families:
        batch_at = _examples_batches(families, tokenizer, config)
    else:
        corpus_task = TASKS.get(corpus)
        if corpus_task.kind != "pretrain":
            raise ValueError(f"corpus {corpus!r} is a {corpus_task.kind} task; use one of {tasks_of_kind('pretrain')}")
        document = corpus_task.sample

        def batch_at(step: int) -> dict[str, torch.Tensor]:
            return text_batch(
                tokenizer, config.batch_size, config.seq_len, config.seed, step, lambda rng: document(rng)[0]
            )

    info = {"preset": preset, "families": list(families or [corpus]), "parent": None}
    return _run("pretrain", model, tokenizer, batch_at, config, out_dir, info, **loop)


def finetune(
    base_dir: Path,
    families: Sequence[str],
    config: TrainConfig,
    out_dir: Path,
    *,
    stage: str = "finetune",
    freeze: Sequence[str] = (),
    **loop: Any,
) -> TrainStats:
    """Full fine-tuning of the model in ``base_dir`` on the union of ``families`` (answer loss only).

    ``freeze``: parameters whose name contains any of these strings keep their base values
    (e.g. ``("embed_tokens",)``: a real LM's embeddings, tied to its output layer).
    """
    if not families:
        raise ValueError("finetune needs at least one task family")
    base_dir = Path(base_dir)
    model, tokenizer = load_model(base_dir)
    frozen = [name for name, p in model.named_parameters() if any(f in name for f in freeze)]
    if freeze and not frozen:
        raise ValueError(f"freeze={list(freeze)} matches no parameter of {str(base_dir)!r}")
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    parent_info = base_dir / "training.json"
    preset = json.loads(parent_info.read_text()).get("preset") if parent_info.exists() else None
    info = {"preset": preset, "families": list(families), "parent": str(base_dir), "frozen": frozen}
    batch_at = _examples_batches(families, tokenizer, config)
    return _run(stage, model, tokenizer, batch_at, config, out_dir, info, **loop)


def instruction_tune(
    base_dir: Path, config: TrainConfig, out_dir: Path, families: Sequence[str] | None = None, **loop: Any
) -> TrainStats:
    """Turn a pretrained base into an instruction-tuned one (all ``instruct`` families by default)."""
    families = list(families or tasks_of_kind("instruct"))
    return finetune(base_dir, families, config, out_dir, stage="instruct", **loop)


def train_expert(
    base_dir: Path, family: str | Sequence[str], config: TrainConfig, out_dir: Path, **loop: Any
) -> TrainStats:
    """Fine-tune an expert on one (held-in) family, or on it and its auxiliary families."""
    families = [family] if isinstance(family, str) else list(family)
    return finetune(base_dir, families, config, out_dir, stage="expert", **loop)


def train_multitask(
    base_dir: Path, config: TrainConfig, out_dir: Path, families: Sequence[str] | None = None, **loop: Any
) -> TrainStats:
    """The multitask baseline: one model on the union of the held-in families (all by default)."""
    families = list(families or tasks_of_kind("held_in"))
    return finetune(base_dir, families, config, out_dir, stage="multitask", **loop)
