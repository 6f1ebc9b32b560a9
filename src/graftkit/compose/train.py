"""Train a CALM bridge from a recipe: AdamW on Θ_C only, warm-up + cosine, accumulation, resume.

Output folder::

    OUTPUT/
      bridge.safetensors, bridge.json   the final bridge (see :mod:`graftkit.compose.files`)
      recipe.yaml                       the resolved recipe
      metrics.jsonl                     one line per evaluation
      checkpoints/step-000500/          bridge files + trainer.pt (optimiser, schedule, step)

Single process by default. Launched by ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE > 1``) the
bridge is wrapped by :mod:`accelerate` (NCCL on GPUs, gloo on CPUs) and each process takes its own
micro-batches: N processes with accumulation k train exactly as one process with accumulation N·k
(the same micro-batches, gradients averaged). Only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import yaml

from graftkit.compose.data import Example, collate, micro_batch, prompt_mask, read_jsonl, tokenize
from graftkit.compose.files import MANIFEST, save_bridge
from graftkit.compose.model import ComposedModel, compose
from graftkit.compose.params import bridge_param_count
from graftkit.compose.recipe import BridgeRecipe, load_recipe
from graftkit.errors import GraftError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _load_models(recipe: BridgeRecipe, device: torch.device) -> tuple[Any, ComposedModel]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(recipe.tokenizer or recipe.anchor)
    source = recipe.tokenizer or recipe.anchor
    for aug in recipe.augments:
        has_tokenizer = any((Path(aug.path) / f).exists() for f in _TOKENIZER_FILES)
        if has_tokenizer and AutoTokenizer.from_pretrained(aug.path).get_vocab() != tokenizer.get_vocab():
            raise GraftError(
                f"The tokenizer in {aug.path} differs from the anchor's ({source}); composition needs "
                "both models to read the same tokens."
            )
    dtype = getattr(torch, recipe.dtype)
    anchor = AutoModelForCausalLM.from_pretrained(recipe.anchor, dtype=dtype)
    augments = [AutoModelForCausalLM.from_pretrained(a.path, dtype=dtype) for a in recipe.augments]
    model = compose(anchor, augments, [a.connections for a in recipe.augments]).to(device)
    return tokenizer, model


def _latest_checkpoint(out: Path) -> Path | None:
    done = sorted(p.parent for p in (out / "checkpoints").glob("step-*/trainer.pt"))
    return done[-1] if done else None


def uses_bf16(setting: bool | str, device: torch.device) -> bool:
    """Whether the recipe's ``bf16`` setting turns on bfloat16 autocast on ``device``."""
    if setting == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(setting)


def model_batch(examples: list[Example], pad_id: int, encoder_mode: bool = False) -> dict[str, torch.Tensor]:
    """The composed model's inputs for ``examples``; in encoder mode with the prompt-only augment mask."""
    batch = collate(examples, pad_id)
    if encoder_mode:
        batch["augment_attention_mask"] = prompt_mask(batch)
    return batch


@torch.no_grad()
def evaluate_loss(
    model: Any, examples: list[Example], batch_size: int, pad_id: int, autocast: Any, encoder_mode: bool = False
) -> float:
    """Mean cross-entropy per completion token over ``examples``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = model_batch(examples[start : start + batch_size], pad_id, encoder_mode)
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != -100).sum())
        with autocast():
            total += float(model(**batch).loss) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def train_bridge(config: BridgeRecipe | str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Train a bridge as the recipe says and return the output folder.

    Resumes from the latest checkpoint in the output folder; returns at once when the final
    bridge for this number of steps is already there.
    """
    recipe = load_recipe(config, overrides)
    out = Path(recipe.output)
    manifest = out / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("training", {}).get("step") == recipe.optim.steps:
        return out

    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        # Without cpu=True accelerate only sets up a process group on accelerators (gloo on CPU).
        accelerator = Accelerator(cpu=recipe.device == "cpu" or not torch.cuda.is_available())
    world, rank = (accelerator.num_processes, accelerator.process_index) if accelerator else (1, 0)
    is_main = rank == 0
    if accelerator:
        device = accelerator.device
    else:
        device = torch.device(recipe.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    torch.manual_seed(recipe.seed)
    tokenizer, model = _load_models(recipe, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    data = recipe.data
    train_set = tokenize(read_jsonl(data.train), tokenizer, data.max_length, data.append_eos)
    eval_set = tokenize(read_jsonl(data.eval), tokenizer, data.max_length, data.append_eos) if data.eval else []

    opt_cfg = recipe.optim
    optimizer = torch.optim.AdamW(
        model.bridge_parameters(), lr=opt_cfg.lr, betas=opt_cfg.betas, weight_decay=opt_cfg.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, opt_cfg.warmup, opt_cfg.steps, opt_cfg.min_lr_ratio)
    )
    start = 0
    resume = _latest_checkpoint(out)
    if resume is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(resume / "bridge.safetensors")))
        state = torch.load(resume / "trainer.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = int(state["step"])

    runner: Any = model
    if accelerator:
        runner, optimizer = accelerator.prepare(model, optimizer)
    use_bf16 = uses_bf16(recipe.bf16, device)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    refs = {"anchor_path": str(Path(recipe.anchor).resolve())}
    refs["augment_paths"] = [str(Path(a.path).resolve()) for a in recipe.augments]  # type: ignore[assignment]

    def save(folder: Path, step: int) -> None:
        save_bridge(
            model,
            folder,
            extra={"training": {"step": step, "recipe": recipe.model_dump(mode="json")}},
            **refs,
        )

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        log = (out / "metrics.jsonl").open("a")
    progress = _progress(recipe.progress and is_main, str(bridge_param_count(model)))
    task = progress.add_task("bridge", total=opt_cfg.steps, completed=start, loss=float("nan"), tps=0.0)
    runner.train()
    with progress:
        for step in range(start, opt_cfg.steps):
            t0, tokens, loss_sum = time.perf_counter(), 0, 0.0
            for micro in range(opt_cfg.grad_accum):
                index = (step * opt_cfg.grad_accum + micro) * world + rank
                examples = micro_batch(train_set, index, opt_cfg.batch_size, recipe.seed)
                batch = model_batch(examples, pad_id, recipe.encoder_mode)
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast():
                    loss = runner(**batch).loss / opt_cfg.grad_accum
                (accelerator.backward(loss) if accelerator else loss.backward())
                loss_sum += float(loss.detach())
                tokens += int(batch["attention_mask"].sum())
            if opt_cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.bridge_parameters(), opt_cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if accelerator:  # the loss of the whole step, not of this process's micro-batches
                loss_sum = float(accelerator.reduce(torch.tensor(loss_sum, device=device), "mean"))
            tps = tokens * world / (time.perf_counter() - t0)
            progress.update(task, completed=done, loss=loss_sum, tps=tps)
            if is_main and (done % recipe.eval_every == 0 or done == opt_cfg.steps):
                row: dict[str, Any] = {"step": done, "train_loss": loss_sum, "lr": schedule.get_last_lr()[0]}
                row["tokens_per_s"] = tps
                if eval_set:
                    row["eval_loss"] = evaluate_loss(
                        model, eval_set, opt_cfg.batch_size, pad_id, autocast, recipe.encoder_mode
                    )
                log.write(json.dumps(row) + "\n")
                log.flush()
            if is_main and done % recipe.checkpoint_every == 0 and done < opt_cfg.steps:
                folder = out / "checkpoints" / f"step-{done:06d}"
                save(folder, done)
                trainer = {
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": done,
                }
                torch.save(trainer, folder / "trainer.pt")
            if accelerator:
                accelerator.wait_for_everyone()
    if is_main:
        log.close()
        save(out, opt_cfg.steps)
    return out


def _progress(enabled: bool, description: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
