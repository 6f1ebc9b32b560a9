"""Preflight (issue #5 part 1): every broken input is refused before weights are merged, with a
message that names the file, tensor or field and says what to do; or it has a documented,
non-silent behaviour (a warning). Each test builds its broken input on the fly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tests.conftest import perturbed, save_family, tiny_gpt2, tiny_llama

from graftkit.errors import CheckpointError, GraftError, OutputExistsError, RecipeError, TensorValueError
from graftkit.merge.api import merge as graft_merge
from graftkit.merge.api import merge_state_dicts
from graftkit.merge.preflight import check_output_path
from graftkit.merge.report import validate_recipe

GRAFT = Path(sys.executable).with_name("graft")
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"
Q0 = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A tiny untied Llama base (3 layers, hidden 32) and two experts."""
    return save_family(tmp_path_factory.mktemp("pre"), "llama", n_experts=2)


# --------------------------------------------------------------------------- helpers


def save_raw(folder: Path, state: dict[str, torch.Tensor], config: dict | None) -> Path:
    """A model folder written by hand: model.safetensors (+ config.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def variant(src: Path, dst: Path, edit=None, config_edit=None) -> Path:
    """Copy a model folder, editing its state dict and/or config."""
    state = load_file(str(src / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    if edit:
        edit(state)
    if config_edit:
        config_edit(config)
    return save_raw(dst, state, config)


def recipe(path: Path, method: str, experts, base=None, params=None, **extra) -> Path:
    data = {
        "merge_method": method,
        "models": [{"model": str(e), **({"parameters": params[i]} if params else {})} for i, e in enumerate(experts)],
        **({"base_model": str(base)} if base else {}),
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def graft_cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([str(GRAFT), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def graft_main(*args) -> subprocess.CompletedProcess:
    """`graft ARGS` through the console entry point, in process (a subprocess costs ~3 s here)."""
    import contextlib
    import io

    from graftkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["graft", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, one "error: …" paragraph on stderr, no traceback, every needle in the message."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


# --------------------------------------------------------------------------- missing / extra tensors


@pytest.fixture(scope="module")
def missing_q(family, tmp_path_factory) -> Path:
    """expert 1 without layer 0's q_proj."""
    _, experts = family
    return variant(experts[1], tmp_path_factory.mktemp("miss") / "no_q", edit=lambda s: s.pop(Q0))


def test_missing_tensor_is_an_error_by_default(family, missing_q, tmp_path):
    base, experts = family
    path = recipe(tmp_path / "r.yaml", "task_arithmetic", [experts[0], missing_q], base)
    with pytest.raises(CheckpointError) as err:
        validate_recipe(path)
    msg = str(err.value)
    assert Q0 in msg and str(missing_q) in msg and "on_missing: base" in msg and "on_missing: skip" in msg


def test_missing_tensor_on_missing_base_uses_the_base(family, missing_q, tmp_path):
    base, experts = family
    path = recipe(tmp_path / "r.yaml", "task_arithmetic", [experts[0], missing_q], base, on_missing="base")
    summary = validate_recipe(path)
    assert "warning:" in summary and Q0 in summary and "on_missing: base" in summary
    out = graft_merge(path, tmp_path / "out", progress=False)
    merged = load_file(str(out / "model.safetensors"))
    b, e0, e1 = (load_file(str(p / "model.safetensors")) for p in (base, experts[0], experts[1]))
    # the missing expert contributes a zero task vector for Q0 only
    torch.testing.assert_close(merged[Q0], b[Q0] + (e0[Q0] - b[Q0]))
    k0 = Q0.replace("q_proj", "k_proj")
    torch.testing.assert_close(merged[k0], b[k0] + (e0[k0] - b[k0]) + (e1[k0] - b[k0]))


def test_missing_tensor_on_missing_skip_merges_the_others(family, missing_q, tmp_path):
    base, experts = family
    path = recipe(tmp_path / "r.yaml", "linear", [experts[0], missing_q], on_missing="skip")
    summary = validate_recipe(path)
    assert "warning:" in summary and Q0 in summary and "on_missing: skip" in summary
    out = graft_merge(path, tmp_path / "out", progress=False)
    merged = load_file(str(out / "model.safetensors"))
    e0, e1 = (load_file(str(p / "model.safetensors")) for p in experts)
    torch.testing.assert_close(merged[Q0], e0[Q0])  # only expert 0 has it: the normalised mean is e0
    k0 = Q0.replace("q_proj", "k_proj")
    torch.testing.assert_close(merged[k0], (e0[k0] + e1[k0]) / 2)


def test_on_missing_base_without_a_base_is_a_recipe_error(family, tmp_path):
    _, experts = family
    path = recipe(tmp_path / "r.yaml", "linear", experts, on_missing="base")
    with pytest.raises(RecipeError, match="on_missing: base.*base_model"):
        validate_recipe(path)


def test_extra_tensors_are_listed_or_warned(family, tmp_path):
    base, experts = family
    extra = variant(experts[0], tmp_path / "extra", edit=lambda s: s.update({"adapter.scale": torch.ones(4)}))
    path = recipe(tmp_path / "r.yaml", "task_arithmetic", [extra, experts[1]], base)
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) that .* lacks: `adapter.scale`"):
        validate_recipe(path)
    for policy in ("base", "skip"):
        path = recipe(tmp_path / "r.yaml", "task_arithmetic", [extra, experts[1]], base, on_missing=policy)
        summary = validate_recipe(path)
        assert "warning:" in summary and "adapter.scale" in summary and "not in the output" in summary


# --------------------------------------------------------------------------- sizes and architectures


def test_shape_mismatch_names_tensor_and_both_shapes(family, tmp_path):
    base, experts = family
    bad = variant(experts[0], tmp_path / "bad", edit=lambda s: s.update({Q0: torch.zeros(32, 16)}))
    with pytest.raises(CheckpointError) as err:
        validate_recipe(recipe(tmp_path / "r.yaml", "ties", [bad, experts[1]], base))
    msg = str(err.value)
    assert Q0 in msg and "[32, 32]" in msg and "[32, 16]" in msg and str(bad) in msg


def test_vocab_mismatch_names_both_sizes_and_suggests_alignment(tmp_path):
    base = tiny_llama()
    base.save_pretrained(tmp_path / "base")
    big = tiny_llama()
    big.resize_token_embeddings(100)
    big.save_pretrained(tmp_path / "big")
    with pytest.raises(CheckpointError) as err:
        validate_recipe(recipe(tmp_path / "r.yaml", "task_arithmetic", [tmp_path / "big"], tmp_path / "base"))
    msg = str(err.value)
    assert EMBED in msg and "vocabulary size 96 vs 100" in msg and "tokenizer" in msg
    assert "`tokenizer: {source: union}`" in msg  # the fix the preflight suggests (tokenizer alignment)


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("hidden_size", 48, "hidden size (`hidden_size`): 32"),
        ("num_hidden_layers", 2, "layer count (`num_hidden_layers`): 3"),
    ],
)
def test_size_mismatch_in_config(family, tmp_path, key, value, what):
    base, experts = family
    other = variant(experts[0], tmp_path / "other", config_edit=lambda c: c.update({key: value}))
    with pytest.raises(CheckpointError) as err:
        validate_recipe(recipe(tmp_path / "r.yaml", "task_arithmetic", [other], base))
    assert what in str(err.value) and f"{value} in {other}" in str(err.value)


def test_layer_count_mismatch_end_to_end(family, tmp_path):
    """A real 2-layer Llama next to the 3-layer base: named in the config check, exit 2."""
    base, _ = family
    small = tiny_llama()
    small.config.num_hidden_layers = 2
    type(small)(small.config).save_pretrained(tmp_path / "small")
    proc = graft_main("validate", recipe(tmp_path / "r.yaml", "ties", [tmp_path / "small"], base))
    assert_refused(proc, "layer count", "3 in", "2 in", "graft compose")


def test_different_architectures(family, tmp_path):
    base, _ = family
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(CheckpointError) as err:
        validate_recipe(recipe(tmp_path / "r.yaml", "task_arithmetic", [tmp_path / "gpt2"], base))
    msg = str(err.value)
    assert "LlamaForCausalLM" in msg and "GPT2LMHeadModel" in msg and "do not share an architecture" in msg


# --------------------------------------------------------------------------- tied embeddings


def _tied_llama(seed: int):
    model = tiny_llama(seed)
    model.config.tie_word_embeddings = True
    tied = type(model)(model.config)
    tied.load_state_dict(model.state_dict(), strict=False)
    tied.tie_weights()
    return tied


def test_untied_base_with_tied_expert_uses_its_embedding_as_head(tmp_path):
    tiny_llama(0).save_pretrained(tmp_path / "base")  # untied: stores lm_head.weight
    _tied_llama(1).save_pretrained(tmp_path / "tied")
    stored = load_file(str(tmp_path / "tied" / "model.safetensors"))
    assert HEAD not in stored  # the case under test: no head on disk
    path = recipe(tmp_path / "r.yaml", "task_arithmetic", [tmp_path / "tied"], tmp_path / "base")
    validate_recipe(path)
    out = graft_merge(path, tmp_path / "out", progress=False)
    merged = load_file(str(out / "model.safetensors"))
    # one expert, weight 1, lambda 1: the merge is the expert, whose head is its embedding
    torch.testing.assert_close(merged[HEAD], stored[EMBED])
    torch.testing.assert_close(merged[EMBED], stored[EMBED])


def test_tied_base_with_untied_expert_lists_lm_head(tmp_path):
    _tied_llama(0).save_pretrained(tmp_path / "base")
    tiny_llama(1).save_pretrained(tmp_path / "untied")
    path = recipe(tmp_path / "r.yaml", "task_arithmetic", [tmp_path / "untied"], tmp_path / "base")
    with pytest.raises(CheckpointError) as err:
        validate_recipe(path)
    assert f"`{HEAD}`" in str(err.value) and "tie_word_embeddings" in str(err.value)


def test_shared_storage_state_dicts_merge_and_save(tmp_path):
    base = tiny_gpt2()
    experts = [perturbed(base, 1), perturbed(base, 2)]
    state = experts[0].state_dict()
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    merged = merge_state_dicts("task_arithmetic", base, experts)
    b = base.state_dict()
    want = b["transformer.wte.weight"] + sum(
        e.state_dict()["transformer.wte.weight"] - b["transformer.wte.weight"] for e in experts
    )
    torch.testing.assert_close(merged["transformer.wte.weight"], want)
    torch.testing.assert_close(merged["lm_head.weight"], want)
    save_file({k: v.contiguous() for k, v in merged.items()}, str(tmp_path / "m.safetensors"))  # no shared storage
    model = type(base)(base.config)
    model.load_state_dict(merged)
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()


# --------------------------------------------------------------------------- broken files, through `graft validate`


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case", ["lfs", "truncated", "corrupt_json", "bin_renamed", "missing_shard", "competing"])
def test_broken_checkpoint_files_end_to_end(family, tmp_path, case):
    base, experts = family
    bad = _copy(experts[0], tmp_path / "bad")
    weights = bad / "model.safetensors"
    needles = [str(weights)]
    if case == "lfs":
        weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
        needles.append("git-LFS pointer")
    elif case == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
        needles.append("corrupt header")
    elif case == "corrupt_json":
        raw = bytearray(weights.read_bytes())
        raw[8:12] = b"\xff\xfe{["
        weights.write_bytes(bytes(raw))
        needles.append("not JSON")
    elif case == "bin_renamed":
        state = {k: v.clone() for k, v in load_file(str(weights)).items()}  # not mmapped
        torch.save(state, weights)
        needles.append("pickle")
    elif case == "missing_shard":
        type(tiny_llama())(tiny_llama().config).save_pretrained(bad, max_shard_size="20KB")
        weights.unlink()
        index = bad / "model.safetensors.index.json"
        shard = sorted(bad.glob("model-*.safetensors"))[-1]
        shard.unlink()
        needles = [str(index), shard.name, "missing"]
    elif case == "competing":
        type(tiny_llama())(tiny_llama().config).save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
        for f in (tmp_path / "sharded").glob("model*"):
            shutil.copy(f, bad / f.name)
        needles = [str(bad), "two competing", "model.safetensors.index.json"]
    path = recipe(tmp_path / "r.yaml", "ties", [bad, experts[1]], base)
    run = graft_cli if case in ("lfs", "bin_renamed") else graft_main  # two real processes, the rest in process
    assert_refused(run("validate", path), *needles)


def test_missing_model_folder_end_to_end(family, tmp_path):
    base, experts = family
    proc = graft_main("validate", recipe(tmp_path / "r.yaml", "ties", [tmp_path / "nope", experts[1]], base))
    assert_refused(proc, str(tmp_path / "nope"), "no such file or folder")


# --------------------------------------------------------------------------- dtypes and values


def test_mixed_dtypes_warn_and_merge_in_fp32(family, tmp_path):
    base, experts = family
    half = variant(
        experts[0], tmp_path / "half", edit=lambda s: s.update({k: v.to(torch.bfloat16) for k, v in s.items()})
    )
    path = recipe(tmp_path / "r.yaml", "linear", [half, experts[1]])
    assert "inputs mix dtypes (bfloat16, float32)" in validate_recipe(path)
    out = graft_merge(path, tmp_path / "out", progress=False)
    merged = load_file(str(out / "model.safetensors"))
    h, e1 = load_file(str(half / "model.safetensors")), load_file(str(experts[1] / "model.safetensors"))
    assert merged[Q0].dtype == torch.bfloat16  # the reference (first model) stores bf16
    want = ((h[Q0].float() + e1[Q0]) / 2).to(torch.bfloat16)
    torch.testing.assert_close(merged[Q0], want)


@pytest.mark.parametrize("method", ["task_arithmetic", "dare_ties"])  # dense (output check) and sparsifying
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_nan_or_inf_input_is_named(family, tmp_path, bad_value, method):
    base, experts = family
    k1 = "model.layers.1.mlp.up_proj.weight"

    def poison(state):
        state[k1] = state[k1].clone()
        state[k1][3, 5] = bad_value

    bad = variant(experts[1], tmp_path / "bad", edit=poison)
    path = recipe(tmp_path / "r.yaml", method, [experts[0], bad], base)
    validate_recipe(path)  # headers only: the values are found while streaming
    with pytest.raises(TensorValueError) as err:
        graft_merge(path, tmp_path / "out", progress=False)
    assert k1 in str(err.value) and str(bad) in str(err.value) and "NaN or Inf" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "graft-" in p.name]  # no partial folder left


QUANT_CONFIGS = {
    "GPTQ": {"quant_method": "gptq", "bits": 4},
    "AWQ": {"quant_method": "awq", "bits": 4},
    "bitsandbytes": {"load_in_4bit": True},
    "FP8": {"quant_method": "fp8"},
}


@pytest.mark.parametrize("kind", sorted(QUANT_CONFIGS))
def test_quantized_config_is_refused(family, tmp_path, kind):
    base, experts = family
    q = variant(
        experts[0], tmp_path / "q", config_edit=lambda c: c.update({"quantization_config": QUANT_CONFIGS[kind]})
    )
    with pytest.raises(CheckpointError) as err:
        validate_recipe(recipe(tmp_path / "r.yaml", "ties", [q], base))
    assert f"is a {kind} quantized checkpoint" in str(err.value) and str(q) in str(err.value)
    assert "full-precision" in str(err.value)


@pytest.mark.parametrize(
    ("kind", "edit"),
    [
        (
            "GPTQ",
            lambda s: s.update(
                {
                    "model.layers.0.mlp.qweight": torch.zeros(4, 8, dtype=torch.int32),
                    "model.layers.0.mlp.qzeros": torch.zeros(1, 8, dtype=torch.int32),
                    "model.layers.0.mlp.g_idx": torch.zeros(32, dtype=torch.int32),
                }
            ),
        ),
        ("AWQ", lambda s: s.update({"model.layers.0.mlp.qweight": torch.zeros(4, 8, dtype=torch.int32)})),
        ("FP8", lambda s: s.update({Q0: s[Q0].to(torch.float8_e4m3fn)})),
        ("bitsandbytes", lambda s: s.update({Q0 + ".absmax": torch.ones(4)})),
    ],
)
def test_quantized_tensors_are_refused_end_to_end(family, tmp_path, kind, edit):
    base, experts = family
    q = variant(experts[0], tmp_path / "q", edit=edit)
    proc = graft_main("validate", recipe(tmp_path / "r.yaml", "ties", [q], base))
    assert_refused(proc, f"{q} is a {kind} quantized checkpoint", "not merge")


# --------------------------------------------------------------------------- output folder


def test_existing_output_is_refused_without_overwrite(family, tmp_path):
    base, experts = family
    path = recipe(tmp_path / "r.yaml", "task_arithmetic", experts, base)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        graft_merge(path, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    proc = graft_main("merge", path, "-o", tmp_path / "out", "--no-progress")
    assert_refused(proc, str(tmp_path / "out"), "--overwrite")


def test_not_enough_disk_is_refused_before_writing(family, tmp_path, monkeypatch):
    import graftkit.io

    base, experts = family
    monkeypatch.setattr(graftkit.io, "free_disk_bytes", lambda path: 1000)
    path = recipe(tmp_path / "r.yaml", "task_arithmetic", experts, base)
    with pytest.raises(GraftError, match=r"needs about .* GB but only 0\.00 GB are free"):
        graft_merge(path, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # nothing written


def test_output_that_is_an_input_is_refused(family, tmp_path):
    base, experts = family
    with pytest.raises(GraftError, match="would destroy an input"):
        check_output_path(base, [base, *experts])
    with pytest.raises(GraftError, match="would destroy an input"):
        check_output_path(base.parent, [base])  # a folder holding an input
    check_output_path(tmp_path / "merged", [base, *experts])  # fine


def test_without_a_base_every_expert_is_compared_and_named(family, tmp_path):
    """linear (no base): the last expert's config is checked too, under its own name."""
    _, experts = family
    other = variant(experts[1], tmp_path / "wide", config_edit=lambda c: c.update({"hidden_size": 48}))
    with pytest.raises(CheckpointError) as err:
        validate_recipe(recipe(tmp_path / "r.yaml", "linear", [experts[0], experts[1], other]))
    assert f"32 in {experts[0]} but 48 in {other}" in str(err.value)


@pytest.mark.parametrize("method", ["task_arithmetic", "dare_ties"])  # output check and input check
def test_float16_tensors_whose_sum_overflows_float16_are_not_called_nonfinite(method):
    # 100,000 entries of 1.0 sum to more than float16's largest value, 65504: the NaN/Inf check
    # must not mistake that for an Inf in the tensor.
    base = {"w": torch.ones(100_000, dtype=torch.float16)}
    experts = [{"w": torch.full((100_000,), 1.5, dtype=torch.float16)} for _ in range(2)]
    extra = {"density": 1.0} if method == "dare_ties" else {}
    merged = merge_state_dicts(method, base, experts, weight=0.5, out_dtype="float16", **extra)
    assert merged["w"].dtype == torch.float16
    torch.testing.assert_close(merged["w"], torch.full((100_000,), 1.5, dtype=torch.float16))


@pytest.mark.parametrize("durable", [False, True])
def test_durable_merge_fsyncs_every_output_file_and_the_parent(family, tmp_path, monkeypatch, durable):
    base, experts = family
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = tmp_path / "parent" / "out"
    graft_merge(recipe(tmp_path / "r.yaml", "linear", experts, base), out, progress=False, durable=durable)
    if not durable:
        assert synced == []  # like save_pretrained: the kernel flushes when it likes
        return
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "graft_recipe.yaml"} <= files
    assert files <= set(synced)  # every file, under the temporary name's folder
    assert synced[-1] == "parent"  # the rename itself, last
