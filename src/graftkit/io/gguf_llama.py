"""The Llama architecture as llama.cpp stores it in GGUF: tensor names, Q/K row order, hyperparameters.

Three differences separate a GGUF Llama from a Hugging Face one:

* **names**: ``blk.3.attn_q.weight`` is ``model.layers.3.self_attn.q_proj.weight``, ``token_embd``
  is ``model.embed_tokens``, ``output`` is ``lm_head`` (absent when the head is tied);
* **rotary layout**: HF rotates the two halves of each head (``rotate_half``), llama.cpp rotates
  interleaved pairs, so llama.cpp's converter reorders the rows of ``q_proj`` and ``k_proj`` (and
  their biases) within each head: row ``2i`` of a head is HF row ``i``, row ``2i+1`` is HF row
  ``i + head_dim/2`` (:func:`to_gguf_rows`; :func:`from_gguf_rows` undoes it);
* **config**: the hyperparameters are metadata keys under ``llama.`` (:func:`config_from_metadata`,
  :func:`metadata_from_config`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from graftkit.errors import CheckpointError

ARCH = "llama"
MODEL_TYPES = ("llama",)
"""HF ``model_type`` values written as GGUF architecture ``llama``."""

_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_BACK = {v: k for k, v in _TOP.items()}
_BLOCK_BACK = {v: k for k, v in _BLOCK.items()}
_GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_HF_BLOCK = re.compile(r"^model\.layers\.(\d+)\.([\w.]+)\.(weight|bias)$")
_SUFFIX = re.compile(r"^(.*)\.(weight|bias)$")


def hf_name(gguf: str) -> str | None:
    """The HF state-dict key of a GGUF tensor name, or None for a name Llama does not have."""
    if m := _GGUF_BLOCK.match(gguf):
        part = _BLOCK.get(m[2])
        return f"model.layers.{m[1]}.{part}.{m[3]}" if part else None
    if (m := _SUFFIX.match(gguf)) and m[1] in _TOP:
        return f"{_TOP[m[1]]}.{m[2]}"
    return None


def gguf_name(hf: str) -> str | None:
    """The GGUF tensor name of an HF Llama state-dict key, or None (e.g. ``rotary_emb.inv_freq``)."""
    if m := _HF_BLOCK.match(hf):
        part = _BLOCK_BACK.get(m[2])
        return f"blk.{m[1]}.{part}.{m[3]}" if part else None
    if (m := _SUFFIX.match(hf)) and m[1] in _TOP_BACK:
        return f"{_TOP_BACK[m[1]]}.{m[2]}"
    return None


def rotary_heads(hf: str, config: Mapping[str, Any]) -> int | None:
    """How many heads' rows llama.cpp reorders in this tensor (``q_proj``/``k_proj``), else None."""
    if ".self_attn.q_proj." in hf:
        return int(config["num_attention_heads"])
    if ".self_attn.k_proj." in hf:
        return int(config.get("num_key_value_heads") or config["num_attention_heads"])
    return None


def to_gguf_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder ``q_proj``/``k_proj`` rows from HF's half-split heads to llama.cpp's interleaved pairs.

    Args:
        w: ``(n_heads * head_dim, in)`` weight or ``(n_heads * head_dim,)`` bias.
        n_heads: query heads for ``q_proj``, key/value heads for ``k_proj``.
    """
    half = w.shape[0] // n_heads // 2
    # (heads, 2 halves, half, ...) → (heads, half, 2, ...): pair i of a head is (x_i, x_{i+half})
    return w.reshape(n_heads, 2, half, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def from_gguf_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`to_gguf_rows`: llama.cpp's interleaved pairs back to HF's halves."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def config_from_metadata(meta: Mapping[str, Any], tensor_names: set[str], path: Any) -> dict[str, Any]:
    """An HF ``LlamaConfig`` dict from a GGUF file's ``llama.*`` and ``tokenizer.ggml.*`` metadata.

    Args:
        meta: metadata key → value (arrays as their length, see :mod:`graftkit.io.gguf_reader`).
        tensor_names: the file's GGUF tensor names (``output.weight`` absent → tied head).
        path: the file, for messages.

    Raises:
        CheckpointError: a required hyperparameter is missing.
    """

    def need(key: str) -> Any:
        if f"{ARCH}.{key}" not in meta:
            raise CheckpointError(f"{path}: the GGUF metadata lacks `{ARCH}.{key}`, which a Llama model needs.")
        return meta[f"{ARCH}.{key}"]

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    vocab = meta.get(f"{ARCH}.vocab_size", meta.get("tokenizer.ggml.tokens"))
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{ARCH}.attention.head_count_kv", heads)),
        "head_dim": int(meta.get(f"{ARCH}.rope.dimension_count", hidden // heads)),
        "max_position_embeddings": int(meta.get(f"{ARCH}.context_length", 2048)),
        "rms_norm_eps": float(meta.get(f"{ARCH}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(meta.get(f"{ARCH}.rope.freq_base", 10000.0))},
        "hidden_act": "silu",
        # llama.cpp writes the output projection only when it is not the embedding matrix
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
        "mlp_bias": "blk.0.ffn_up.bias" in tensor_names,
    }
    if vocab is not None:
        config["vocab_size"] = int(vocab)
    for hf_key, key in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            config[hf_key] = int(meta[f"tokenizer.ggml.{key}_token_id"])
    return config


def rope_theta(config: Mapping[str, Any]) -> float:
    """``rope_theta`` from a transformers 5 ``rope_parameters`` or a 4.x top-level key."""
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def check_config(config: Mapping[str, Any] | None, label: str) -> None:
    """Refuse configs GGUF output cannot describe faithfully (non-Llama, scaled RoPE).

    Raises:
        CheckpointError: naming ``label`` and what is unsupported.
    """
    config = config or {}
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"{label}: GGUF output supports Llama-family models (model_type {', '.join(MODEL_TYPES)}), but this "
            f"model's config says model_type {model_type!r}. Write safetensors instead (drop --format gguf)."
        )
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in (None, "default"):
        raise CheckpointError(
            f"{label}: RoPE scaling {rope_type!r} is not written to GGUF by graftkit (only unscaled RoPE); "
            "write safetensors instead and convert with llama.cpp's convert_hf_to_gguf.py."
        )


def metadata_from_config(config: Mapping[str, Any]) -> list[tuple[str, int | float]]:
    """The ``llama.*`` hyperparameter keys for an HF Llama config, as ``(key, value)``.

    Integers are written as uint32 and floats as float32, as llama.cpp's converter writes them.
    """
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    keys: list[tuple[str, int | float]] = [
        ("context_length", int(config.get("max_position_embeddings", 2048))),
        ("embedding_length", int(config["hidden_size"])),
        ("block_count", int(config["num_hidden_layers"])),
        ("feed_forward_length", int(config["intermediate_size"])),
        ("attention.head_count", heads),
        ("attention.head_count_kv", int(config.get("num_key_value_heads") or heads)),
        ("rope.freq_base", rope_theta(config)),
        ("rope.dimension_count", head_dim),
        ("attention.layer_norm_rms_epsilon", float(config.get("rms_norm_eps", 1e-6))),
        ("vocab_size", int(config["vocab_size"])),
    ]
    if head_dim * heads != int(config["hidden_size"]):
        keys += [("attention.key_length", head_dim), ("attention.value_length", head_dim)]
    return [(f"{ARCH}.{k}", v) for k, v in keys]
