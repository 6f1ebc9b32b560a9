"""End to end: tiny Llama / GPT-2 / BERT families merged through the CLI, loaded with AutoModel*,
and compared tensor by tensor with the plain reference implementation of the spec."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.conftest import save_family
from tests.merge import reference as ref
from typer.testing import CliRunner

from graftkit.cli import app
from graftkit.methods.rng import expert_seed, uniform

runner = CliRunner()


def write_recipe(path: Path, method: str, base: Path | None, experts: list[Path], params=None, **extra) -> Path:
    recipe = {
        "merge_method": method,
        "models": [{"model": str(e), "parameters": (params or [{}] * len(experts))[i]} for i, e in enumerate(experts)],
        **({"base_model": str(base)} if base else {}),
        **extra,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def graft(*args: str) -> None:
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output + repr(result.exception)


def states(base: Path, experts: list[Path]):
    def load(p: Path):
        return {k: v.float() for k, v in load_file(p / "model.safetensors").items()}

    return load(base), [load(e) for e in experts]


def expected(method: str, b, xs, name: str):
    ws = [1.0, 0.5, 2.0]
    if method == "linear":
        return ref.linear(xs, ws)
    if method == "task_arithmetic":
        return ref.task_arithmetic(b, xs, ws, lam=0.8)
    if method == "ties":
        return ref.ties(b, xs, ws, [0.3, 0.5, 1.0], lam=1.0)
    if method == "dare_ties":
        ds = []
        for i, x in enumerate(xs):
            keep = uniform(x.shape, expert_seed(7, i, name), stream="dare") < 0.5
            ds.append(ref.dare_delta(x - b, 0.5, keep))
        return b + ref.elect_and_mean(ds, ws)
    raise AssertionError(method)


PARAMS = {
    "linear": ([{"weight": w} for w in (1.0, 0.5, 2.0)], {}),
    "task_arithmetic": ([{"weight": w} for w in (1.0, 0.5, 2.0)], {"lambda": 0.8}),
    "ties": ([{"weight": w, "density": d} for w, d in ((1.0, 0.3), (0.5, 0.5), (2.0, 1.0))], {}),
    "dare_ties": ([{"weight": w, "density": 0.5} for w in (1.0, 0.5, 2.0)], {}),
}


@pytest.fixture(scope="module", params=["llama", "gpt2", "bert"])
def family(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return request.param, *save_family(root, request.param)


def auto_class(arch: str):
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModel if arch == "bert" else AutoModelForCausalLM


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_ties"])
def test_cli_merge_matches_reference(family, method, tmp_path):
    arch, base, experts = family
    per_expert, global_params = PARAMS[method]
    recipe = write_recipe(tmp_path / "r.yaml", method, base, experts, per_expert, parameters=global_params, seed=7)
    graft("merge", recipe, "-o", tmp_path / "out", "--no-progress")
    model = auto_class(arch).from_pretrained(tmp_path / "out")
    assert model is not None
    b, xs = states(base, experts)
    merged = load_file(tmp_path / "out" / "model.safetensors")
    assert set(merged) == set(b)  # nothing dropped, nothing added (tied lm_head stays tied)
    for name in b:
        torch.testing.assert_close(
            merged[name], expected(method, b[name], [x[name] for x in xs], name), atol=1e-6, rtol=0
        )
    if arch == "gpt2":
        assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)


def test_sharded_inputs_and_outputs(tmp_path):
    base, experts = save_family(tmp_path / "in", "llama", n_experts=2, max_shard_size="20KB")
    assert (base / "model.safetensors.index.json").exists()
    recipe = write_recipe(tmp_path / "r.yaml", "task_arithmetic", base, experts)
    graft("merge", recipe, "-o", tmp_path / "out", "--max-shard-size", "30KB", "--no-progress")
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    b = AutoModelForCausalLM.from_pretrained(base).state_dict()
    xs = [AutoModelForCausalLM.from_pretrained(e).state_dict() for e in experts]
    for name in b:
        torch.testing.assert_close(
            merged[name], ref.task_arithmetic(b[name], [x[name] for x in xs], [1, 1]), atol=1e-6, rtol=0
        )


def test_bf16_inputs_are_merged_in_fp32_then_cast(tmp_path):
    from transformers import AutoModelForCausalLM

    base, experts = save_family(tmp_path / "in", "llama", n_experts=2)
    for path in [base, *experts]:
        AutoModelForCausalLM.from_pretrained(path).to(torch.bfloat16).save_pretrained(path)
    recipe = write_recipe(tmp_path / "r.yaml", "linear", None, experts)
    graft("merge", recipe, "-o", tmp_path / "out", "--no-progress")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    xs = [load_file(e / "model.safetensors") for e in experts]
    for name, tensor in merged.items():
        assert tensor.dtype == torch.bfloat16
        want = ((xs[0][name].float() + xs[1][name].float()) / 2).to(torch.bfloat16)
        assert torch.equal(tensor, want), name
    assert yaml.safe_load((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_out_dtype_is_what_is_stored(tmp_path, llama_family):
    base, experts = llama_family
    recipe = write_recipe(tmp_path / "r.yaml", "linear", None, experts, out_dtype="float16")
    graft("merge", recipe, "-o", tmp_path / "out", "--no-progress")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    assert {t.dtype for t in merged.values()} == {torch.float16}


def test_bin_input(tmp_path):
    from transformers import AutoModelForCausalLM

    base, experts = save_family(tmp_path / "in", "llama", n_experts=2)
    for folder in [base, *experts]:  # transformers 5 writes only safetensors: convert by hand
        state = load_file(folder / "model.safetensors")
        torch.save(state, folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    recipe = write_recipe(tmp_path / "r.yaml", "task_arithmetic", base, experts)
    graft("merge", recipe, "-o", tmp_path / "out", "--no-progress")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    b = torch.load(base / "pytorch_model.bin", weights_only=True)
    xs = [torch.load(e / "pytorch_model.bin", weights_only=True) for e in experts]
    for name in b:
        torch.testing.assert_close(
            merged[name], ref.task_arithmetic(b[name], [x[name] for x in xs], [1, 1]), atol=1e-6, rtol=0
        )


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_recipe_and_seed_give_identical_bytes_across_threads(tmp_path, llama_family):
    base, experts = llama_family
    params = [{"density": 0.4} for _ in experts]
    recipe = write_recipe(tmp_path / "r.yaml", "dare_ties", base, experts, params, seed=3)
    graft("merge", recipe, "-o", tmp_path / "a", "--threads", "1", "--no-progress")
    graft("merge", recipe, "-o", tmp_path / "b", "--threads", "2", "--no-progress")
    graft("merge", recipe, "-o", tmp_path / "c", "--seed", "4", "--no-progress")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["model.safetensors"] != digest(tmp_path / "c")["model.safetensors"]


def test_output_has_config_tokenizer_recipe_and_card(tmp_path, llama_family):
    base, experts = llama_family
    (base / "tokenizer_config.json").write_text("{}")
    recipe = write_recipe(tmp_path / "r.yaml", "ties", base, experts)
    graft("merge", recipe, "-o", tmp_path / "out", "--no-progress")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "graft_recipe.yaml",
        "README.md",
    } <= names
    card = (tmp_path / "out" / "README.md").read_text()
    assert "ties" in card and str(experts[0]) in card


def test_existing_output_is_refused_without_overwrite(tmp_path, llama_family):
    base, experts = llama_family
    recipe = write_recipe(tmp_path / "r.yaml", "linear", None, experts)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["merge", str(recipe), "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code != 0 and "overwrite" in str(result.exception)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    graft("merge", recipe, "-o", tmp_path / "out", "--overwrite", "--no-progress")
    assert not (tmp_path / "out" / "keep.txt").exists()
