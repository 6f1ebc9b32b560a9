"""Study units of the real-anchor CALM study: train a model over the anchor's tokenizer, and score one.

Both have the engine's signature ``fn(inputs, out_dir, work_dir) -> dict`` (see
:mod:`graftkit.study.calm_kv_stages`, whose ``bridge`` and ``lora`` units the study reuses). Models
are named by :func:`~graftkit.study.model_units.model_ref` (folder and weights hash).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftkit.registry import Registry
from graftkit.study.calm_kv_chat import datasets_of
from graftkit.study.calm_kv_stages import _model_result, _set_threads, _task_batches
from graftkit.zoo.train import TrainConfig

Batches = Callable[[int], dict[str, Any]]
BATCHES: Registry[Callable[[dict[str, Any], Any, TrainConfig], Batches]] = Registry("training data kind")
"""Training data by ``data["kind"]``: step → ``input_ids``, ``attention_mask``, ``labels``, each ``(B, T)``."""


@BATCHES.register("task")
def _task_data(data: dict[str, Any], tokenizer: Any, config: TrainConfig) -> Batches:
    """Examples of one chat-rendered study dataset (``task``, ``kv`` or ``lang``, ``question``); loss on the answer."""
    task = datasets_of(data, data["question"])[data["task"]]
    return _task_batches(task, tokenizer, config)


@BATCHES.register("text")
def _text_data(data: dict[str, Any], tokenizer: Any, config: TrainConfig) -> Batches:
    """Packed documents of a zoo pre-training ``corpus`` (no keys, no arithmetic answers); loss everywhere."""
    from graftkit.zoo.data import text_batch
    from graftkit.zoo.tasks import TASKS

    corpus = TASKS.get(data["corpus"])

    def document(rng: random.Random) -> str:
        return corpus.sample(rng)[0]

    def batch_at(step: int) -> dict[str, Any]:
        return text_batch(tokenizer, config.batch_size, config.seq_len, config.seed, step, document)

    return batch_at


def new_augment(shape: dict[str, Any], anchor_folder: Path, seed: int) -> Any:
    """A fresh Llama of ``shape`` (an :class:`AugmentShape` dict) over the anchor's vocabulary and special ids."""
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    anchor = AutoConfig.from_pretrained(anchor_folder)
    config = LlamaConfig(
        vocab_size=anchor.vocab_size,
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_position_embeddings=shape["max_positions"],
        tie_word_embeddings=shape["tie_embeddings"],
        pad_token_id=anchor.pad_token_id,
        bos_token_id=anchor.bos_token_id,
        eos_token_id=anchor.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def train_model(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: a model fine-tuned from ``base``, or a fresh ``shape`` over ``anchor``'s tokenizer, in ``out_dir/model``.

    Inputs: ``base`` (a model ref) or ``shape`` + ``init_seed``; ``anchor`` (a model ref: tokenizer
    and vocabulary); ``data`` (a :data:`BATCHES` dict, or None: left untrained); ``config`` (a
    :class:`TrainConfig` dict); ``freeze`` (parameter-name substrings kept fixed); ``bf16``;
    ``device``; ``threads``.
    """
    from transformers import AutoTokenizer

    from graftkit.zoo.train import load_model, save_model, train_loop

    _set_threads(inputs)
    anchor = Path(inputs["anchor"]["path"])
    if inputs.get("base") is not None:
        model, tokenizer = load_model(Path(inputs["base"]["path"]))
    else:
        model = new_augment(inputs["shape"], anchor, int(inputs["init_seed"]))
        tokenizer = AutoTokenizer.from_pretrained(anchor)
    info: dict[str, Any] = {"stage": "calm-kv-real", "data": inputs["data"], "seconds": 0.0}
    if inputs["data"] is not None:
        frozen = [n for n, p in model.named_parameters() if any(f in n for f in inputs.get("freeze", ()))]
        for name, param in model.named_parameters():
            param.requires_grad_(name not in frozen)
        config = TrainConfig.model_validate(inputs["config"])
        batches = BATCHES.get(inputs["data"]["kind"])(inputs["data"], tokenizer, config)
        device = inputs.get("device", "cpu")
        stats = train_loop(
            model, batches, config, work_dir=work_dir, progress=False, device=device, bf16=inputs.get("bf16")
        )
        info |= {"config": config.model_dump(), "frozen": frozen, **stats.model_dump()}
    info["params"] = sum(p.numel() for p in model.parameters())
    save_model(model.cpu(), tokenizer, out_dir / "model", info)
    return _model_result(out_dir / "model")


def _composed(inputs: dict[str, Any]) -> Any:
    """The model a score unit decodes: a plain model folder, or a bridge over its anchor and augment."""
    from graftkit.compose.files import load_bridge
    from graftkit.zoo.train import load_model

    if inputs.get("bridge") is None:
        return load_model(Path(inputs["model"]["path"]))[0]
    anchor = load_model(Path(inputs["model"]["path"]))[0]
    augment = load_model(Path(inputs["augment"]["path"]))[0]
    return load_bridge(inputs["bridge"], anchor=anchor, augments=[augment])


def score(inputs: dict[str, Any], out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Unit: exact match (%) of a model or composition on each test set, greedy, prompts as trained.

    Inputs: ``model`` (a model ref: the model, or a bridge's anchor), ``bridge`` (a bridge folder or
    None) with ``augment`` (a model ref), ``mode`` (``paper`` / ``encoder``; bridges only), ``kv`` or ``lang``,
    ``question``, ``datasets``, ``n_eval``, ``seed``, ``max_new_tokens``, ``bf16``, ``device``, ``threads``.
    """
    import torch
    from transformers import AutoTokenizer

    from graftkit.study.calm_kv import exact_match
    from graftkit.study.calm_kv_data import distinct_examples

    _set_threads(inputs)
    device = inputs.get("device", "cpu")
    tokenizer = AutoTokenizer.from_pretrained(inputs["model"]["path"])
    model = _composed(inputs).to(device).eval()
    tasks = datasets_of(inputs, inputs["question"])
    decode = _decoder(model, tokenizer, inputs)
    scores, counts = {}, {}
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bool(inputs["bf16"]))
    for name in inputs["datasets"]:
        examples = distinct_examples(tasks[name], "test", int(inputs["n_eval"]), int(inputs["seed"]))
        with torch.no_grad(), autocast:
            outputs = decode([e.prompt for e in examples])
        scores[name] = round(exact_match(outputs, [e.answer for e in examples]), 2)
        counts[name] = len(examples)
    return {"scores": scores, "n": counts}


DECODE_BATCH = 32
"""Prompts decoded together."""


def _decoder(model: Any, tokenizer: Any, inputs: dict[str, Any]) -> Callable[[list[str]], list[str]]:
    """prompts → greedy outputs: composed models in ``inputs["mode"]``, plain ones by the evaluator's
    decoder. Both encode a prompt as training did (``tokenizer(prompt)``: no bos of our own)."""
    from graftkit.compose.generate import generate_text
    from graftkit.evaluate.batching import pad_id
    from graftkit.evaluate.generate import greedy_generate

    steps = int(inputs["max_new_tokens"])

    def composed(prompts: list[str]) -> list[str]:
        return generate_text(model, tokenizer, prompts, steps, mode=inputs["mode"])

    def plain(prompts: list[str]) -> list[str]:
        ids = [tokenizer(p)["input_ids"] for p in prompts]
        eos, pad = tokenizer.eos_token_id, pad_id(tokenizer)
        return tokenizer.batch_decode(
            greedy_generate(model, ids, max_new_tokens=steps, eos_token_id=eos, pad_token_id=pad),
            skip_special_tokens=True,
        )

    one_batch = plain if inputs.get("bridge") is None else composed

    def decode(prompts: list[str]) -> list[str]:
        outputs: list[str] = []
        for start in range(0, len(prompts), DECODE_BATCH):
            outputs += one_batch(prompts[start : start + DECODE_BATCH])
        return outputs

    return decode
