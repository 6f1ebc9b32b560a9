"""GGUF in and out: graftkit's reader against transformers' GGUF loader, `graft convert`, merges of
GGUF inputs, and merges written as GGUF (loaded back by transformers and by graftkit).

Input files are written here with ``gguf.GGUFWriter`` directly (names, Q/K row order and
quantization done by this file, not by graftkit), so the reader is checked against an
independent writer and against transformers' independent reader.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.conftest import perturbed, save_family, tiny_llama_config
from typer.testing import CliRunner

from graftkit.cli import app
from graftkit.errors import CheckpointError, GraftError
from graftkit.io import Checkpoint
from graftkit.io.gguf_llama import from_gguf_rows, to_gguf_rows
from graftkit.merge.api import merge

runner = CliRunner()
Q = gguf.GGMLQuantizationType

# Logit tolerance of GGUF output against the float32 merge, relative to the largest |logit|.
# Measured on the tiny family: f16 4e-4, bf16 4e-3, q8_0 1e-2.
TOLERANCE = {"f16": 1e-2, "bf16": 1e-2, "q8_0": 5e-2}

_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_BLOCK = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _gguf_name(name: str) -> str:
    stem, suffix = name.rsplit(".", 1)
    if stem in _TOP:
        return f"{_TOP[stem]}.{suffix}"
    _, _, layer, part = stem.split(".", 3)
    return f"blk.{layer}.{_BLOCK[part]}.{suffix}"


def _llama_cpp_rows(w: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf permutation of q_proj / k_proj rows
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path: Path, qtype, arch: str = "llama") -> Path:
    """Write an HF Llama as llama.cpp would: GGUF names, permuted Q/K, 1-D tensors in F32."""
    c = model.config
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(c.head_dim)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    state = model.state_dict()
    if c.tie_word_embeddings:
        state.pop("lm_head.weight")
    for name, tensor in state.items():
        a = tensor.float().numpy()
        if "q_proj" in name:
            a = _llama_cpp_rows(a, c.num_attention_heads)
        if "k_proj" in name:
            a = _llama_cpp_rows(a, c.num_key_value_heads)
        if a.ndim == 1:
            w.add_tensor(_gguf_name(name), a)
        elif qtype == Q.F16:
            w.add_tensor(_gguf_name(name), a.astype(np.float16))
        else:
            w.add_tensor(_gguf_name(name), gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny(seed: int = 0, **overrides):
    """A tiny Llama whose rows (hidden 64, intermediate 128) fit 32-value quantization blocks."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    fields = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    return LlamaForCausalLM(tiny_llama_config(**{**fields, **overrides})).eval()


def hf_gguf(path: Path):
    """The model transformers' own GGUF loader makes of ``path``, in float32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def graft(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def graft_error(*args) -> str:
    """The message of the user error a `graft` command stops with (the CLI prints it, exit code 2)."""
    result = graft(*args)
    assert isinstance(result.exception, GraftError) and result.exception.exit_code == 2, result.output
    return str(result.exception)


@pytest.fixture(scope="session")
def gguf_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf_in")
    model = tiny()
    files = {q: write_gguf(model, root / f"tiny-{q}.gguf", Q[q]) for q in ("F16", "Q8_0", "Q4_1")}
    files["tied"] = write_gguf(tiny(seed=1, tie_word_embeddings=True), root / "tied-Q8_0.gguf", Q.Q8_0)
    return files


# --- GGUF in ------------------------------------------------------------------------------------


def test_rotary_row_order_round_trips_and_matches_llama_cpp():
    w = torch.randn(4 * 16, 8)
    assert torch.equal(to_gguf_rows(w, 4), torch.from_numpy(_llama_cpp_rows(w.numpy(), 4)))
    assert torch.equal(from_gguf_rows(to_gguf_rows(w, 4), 4), w)
    bias = torch.randn(2 * 16)
    assert torch.equal(from_gguf_rows(to_gguf_rows(bias, 2), 2), bias)


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_1"])
def test_reader_equals_transformers_loader(gguf_files, qtype):
    path = gguf_files[qtype]
    expected = hf_gguf(path).state_dict()
    original = tiny().state_dict()
    with Checkpoint.open(path) as ck:
        assert ck.format == "gguf" and ck.quantization is None
        assert set(ck.tensors) == set(expected) == set(original)
        for name, info in ck.tensors.items():
            got = ck.read(name)
            assert info.dtype == got.dtype == torch.float32 and info.shape == tuple(original[name].shape)
            assert torch.equal(got, expected[name]), name
            # and close to the weights that were quantized (Q4_1 keeps 4 bits: the loosest)
            assert (got - original[name]).abs().max() <= {"F16": 1e-3, "Q8_0": 2e-3, "Q4_1": 2e-2}[qtype], name
        matrices = sum(len(i.shape) == 2 for i in ck.tensors.values())
        assert ck.type_counts() == {qtype: matrices, "F32": len(ck.tensors) - matrices}  # 1-D norms stay F32


def test_reader_on_smollm2_equals_transformers_loader():
    from graftkit.zoo.smollm2 import gguf_path

    try:
        path = gguf_path()
    except CheckpointError as err:
        pytest.skip(str(err))
    model = hf_gguf(path)
    expected = model.state_dict()
    with Checkpoint.open(path) as ck:
        # tied head: no output.weight in the file, no lm_head.weight here (transformers aliases it)
        assert ck.config["tie_word_embeddings"] and "lm_head.weight" not in ck.tensors
        assert set(expected) - set(ck.tensors) == {"lm_head.weight"}
        assert {n: i.shape for n, i in ck.tensors.items()} == {
            n: tuple(t.shape) for n, t in expected.items() if n != "lm_head.weight"
        }
        for name in (
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.7.self_attn.k_proj.weight",
            "model.layers.29.mlp.down_proj.weight",
            "model.norm.weight",
        ):
            assert torch.equal(ck.read(name), expected[name]), name
        config = model.config
        for key in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "head_dim", "rms_norm_eps"):
            assert ck.config[key] == getattr(config, key), key
        assert ck.config["rope_parameters"]["rope_theta"] == config.rope_parameters["rope_theta"]


def test_validate_reads_headers_only(gguf_files, tmp_path, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("tensor data was dequantized during validation")

    monkeypatch.setattr(gguf.quants, "dequantize", refuse)
    recipe = _recipe(tmp_path / "r.yaml", [gguf_files["Q8_0"], gguf_files["Q4_1"]])
    result = graft("validate", recipe)
    assert result.exit_code == 0, result.output
    assert "recipe OK" in result.output


def test_convert_gives_a_folder_with_transformers_logits(gguf_files, tmp_path):
    from transformers import AutoModelForCausalLM

    for key in ("Q4_1", "tied"):
        out = tmp_path / key
        result = graft("convert", gguf_files[key], "-o", out)
        assert result.exit_code == 0, result.output
        converted = AutoModelForCausalLM.from_pretrained(out).eval()
        assert torch.equal(logits(converted), logits(hf_gguf(gguf_files[key])))
        names = set(load_file(out / "model.safetensors"))
        assert ("lm_head.weight" in names) == (key != "tied")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_convert_refuses_existing_output_without_overwrite(gguf_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "already exists" in graft_error("convert", gguf_files["F16"], "-o", out)
    assert (out / "keep.txt").read_text() == "mine"
    assert graft("convert", gguf_files["F16"], "-o", out, "--overwrite").exit_code == 0
    assert (out / "model.safetensors").is_file() and not (out / "keep.txt").exists()


def test_merge_of_gguf_experts_equals_merge_of_converted_folders(gguf_files, tmp_path):
    experts = [gguf_files["Q8_0"], gguf_files["Q4_1"]]
    folders = []
    for i, path in enumerate(experts):
        assert graft("convert", path, "-o", tmp_path / f"conv{i}").exit_code == 0
        folders.append(tmp_path / f"conv{i}")
    from_gguf = merge(_recipe_dict(experts), tmp_path / "from_gguf", progress=False)
    from_folders = merge(_recipe_dict(folders), tmp_path / "from_folders", progress=False)
    a, b = load_file(from_gguf / "model.safetensors"), load_file(from_folders / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(from_gguf)  # config.json built from the GGUF metadata


# --- GGUF out -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> tuple[Path, list[Path], Path]:
    """A tiny Llama family, and the float32 linear merge of its experts (safetensors)."""
    root = tmp_path_factory.mktemp("gguf_out")
    base, experts = save_family(root, "llama", n_experts=2)
    fp32 = merge(_recipe_dict(experts), root / "fp32", progress=False)
    return base, experts, fp32


@pytest.mark.parametrize("gguf_type", ["f16", "bf16", "q8_0"])
def test_gguf_output_loads_in_transformers_within_tolerance(family, tmp_path, gguf_type):
    from transformers import AutoModelForCausalLM

    _, experts, fp32 = family
    recipe = _recipe(tmp_path / "r.yaml", experts)
    out = tmp_path / "merged.gguf"
    result = graft("merge", recipe, "-o", out, "--format", "gguf", "--gguf-type", gguf_type, "--no-progress")
    assert result.exit_code == 0, result.output
    full = logits(AutoModelForCausalLM.from_pretrained(fp32).eval())
    error = (logits(hf_gguf(out)) - full).abs().max() / full.abs().max()
    assert error <= TOLERANCE[gguf_type], float(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.gguf", "r.yaml"]  # no temporary left
    meta = gguf.GGUFReader(out).fields
    assert yaml.safe_load(meta["graftkit.recipe"].contents())["merge_method"] == "linear"


def test_gguf_f16_output_round_trips_exactly(family, tmp_path):
    _, experts, fp32 = family
    out = merge(_recipe_dict(experts), tmp_path / "m.gguf", progress=False, format="gguf", gguf_type="f16")
    merged = load_file(fp32 / "model.safetensors")
    with Checkpoint.open(out) as ck:
        assert set(ck.tensors) == set(merged)
        for name, info in ck.tensors.items():
            # matrices are stored in F16; 1-D norms in F32, as llama.cpp stores them
            want = merged[name].half().float() if len(info.shape) == 2 else merged[name]
            assert torch.equal(ck.read(name), want), name


def test_gguf_output_carries_the_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    base = tmp_path / "base"
    model = tiny(vocab_size=320)
    model.save_pretrained(base)
    tokenizer = _byte_level_tokenizer()
    tokenizer.save_pretrained(base)
    expert = tmp_path / "expert"
    perturbed(model, seed=5).save_pretrained(expert)
    recipe = {"merge_method": "task_arithmetic", "base_model": str(base), "models": [{"model": str(expert)}]}
    out = merge(recipe, tmp_path / "m.gguf", progress=False, format="gguf", gguf_type="q8_0")
    loaded = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    text = "hello world, the quick brown fox <|im_end|>"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.bos_token, loaded.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert "im_start" in gguf.GGUFReader(out).fields["tokenizer.chat_template"].contents()


def test_gguf_output_refuses_existing_file_without_overwrite(family, tmp_path):
    _, experts, _ = family
    out = tmp_path / "m.gguf"
    out.write_bytes(b"mine")
    with pytest.raises(GraftError, match="already exists"):
        merge(_recipe_dict(experts), out, progress=False, format="gguf")
    assert out.read_bytes() == b"mine"
    merge(_recipe_dict(experts), out, progress=False, format="gguf", overwrite=True)
    assert out.read_bytes()[:4] == b"GGUF"


def test_safetensors_output_is_unchanged_by_default(family, tmp_path):
    _, experts, fp32 = family
    out = merge(_recipe_dict(experts), tmp_path / "st", progress=False, format="safetensors")
    a, b = load_file(out / "model.safetensors"), load_file(fp32 / "model.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a)


# --- errors -------------------------------------------------------------------------------------


def test_unsupported_gguf_architecture_names_the_file(tmp_path):
    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match=r"gpt2\.gguf.*architecture 'gpt2'"):
        Checkpoint.open(path)
    message = graft_error("convert", path, "-o", tmp_path / "out")
    assert "gpt2.gguf" in message and "not supported" in message


def test_gguf_type_without_gguf_format_is_refused(family, tmp_path):
    _, experts, _ = family
    recipe = _recipe(tmp_path / "r.yaml", experts)
    assert "--format gguf" in graft_error("merge", recipe, "-o", tmp_path / "out", "--gguf-type", "q8_0")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "gguf", "resume": True}, "--resume is not supported"),
        ({"format": "gguf", "out": "m"}, "ending in .gguf"),
        ({"format": "ggml"}, "Unknown output format"),
        ({"format": "gguf", "gguf_type": "q4_k"}, "Unknown --gguf-type"),
    ],
)
def test_gguf_option_errors(family, tmp_path, options, message):
    _, experts, _ = family
    out = tmp_path / options.pop("out", "m.gguf")
    with pytest.raises(GraftError, match=message):
        merge(_recipe_dict(experts), out, progress=False, **options)
    assert not out.exists()


def test_gguf_output_refuses_non_llama_models(tmp_path):
    _, experts = save_family(tmp_path, "gpt2", n_experts=2)
    with pytest.raises(CheckpointError, match="model_type 'gpt2'"):
        merge(_recipe_dict(experts), tmp_path / "m.gguf", progress=False, format="gguf")
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".gguf" or ".graft-tmp" in p.name]


# --- helpers ------------------------------------------------------------------------------------


def _recipe_dict(models: list[Path]) -> dict:
    weights = [0.3, 0.7]
    return {
        "merge_method": "linear",
        "models": [{"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, weights, strict=True)],
    }


def _recipe(path: Path, models: list[Path]) -> Path:
    path.write_text(yaml.safe_dump(_recipe_dict(models)))
    return path


def _byte_level_tokenizer():
    """A 300-token byte-level BPE (the GPT-2 / SmolLM kind) trained on a sentence, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(["hello world, the quick brown fox jumps over the lazy dog"] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    return tokenizer
