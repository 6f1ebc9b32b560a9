"""Fisher and RegMean end to end: `graft stats` on tiny Llama experts, then `graft merge`, checked
tensor by tensor against an independent in-memory computation (autograd and hooks written here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tests.conftest import perturbed, save_family, tiny_llama_config
from typer.testing import CliRunner

from graftkit.cli import app
from graftkit.errors import CheckpointError, GraftError, OutputExistsError, RecipeError
from graftkit.methods.rng import expert_seed
from graftkit.methods.stages import dare

runner = CliRunner()
TASKS = ("addition", "reversal")
N = 6


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def graft(*args) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)


def fails(*args) -> BaseException:
    result = invoke(*args)
    assert result.exit_code != 0 and isinstance(result.exception, GraftError), result.output + repr(result.exception)
    return result.exception


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A tiny Llama base and two experts with the zoo tokenizer, and each expert's statistics."""
    from graftkit.zoo.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("stats")
    base, experts = save_family(root, "llama", n_experts=2)
    tokenizer = build_tokenizer()
    for folder in (base, *experts):
        tokenizer.save_pretrained(folder)
    stats = []
    for i, expert in enumerate(experts):
        graft("stats", expert, "--task", TASKS[i], "--n", N, "-o", root / f"stats{i}")
        stats.append(root / f"stats{i}")
    return base, experts, stats


def write_recipe(path: Path, method: str, experts, stats, weights=None, **extra) -> Path:
    models = []
    for i, expert in enumerate(experts):
        entry = {"model": str(expert), "stats": stats[i] if isinstance(stats[i], dict) else str(stats[i])}
        if weights:
            entry["parameters"] = {"weight": weights[i]}
        models.append(entry)
    path.write_text(yaml.safe_dump({"merge_method": method, "models": models, **extra}))
    return path


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in load_file(folder / "model.safetensors").items()}


# An independent statistics pass: the same examples, autograd and forward hooks written here.


def reference_stats(expert: Path, task: str, n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from graftkit.zoo.data import encode_examples
    from graftkit.zoo.tasks import TASKS as REGISTRY

    model = AutoModelForCausalLM.from_pretrained(expert, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(expert)
    names = [name for name, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    fisher = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in zip(names, params, strict=True)}
    grams: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].reshape(-1, module.in_features).double()
            grams[name] = grams.get(name, 0) + x.T @ x

        return record

    handles = [
        m.register_forward_hook(hook(f"{name}.weight"))
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    ]
    examples = REGISTRY.get(task).examples("train", n)
    for example in examples:
        batch = encode_examples([example], tokenizer, model.config.max_position_embeddings)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]
        nll = torch.nn.functional.cross_entropy(logits[:-1], batch["labels"][0, 1:], ignore_index=-100, reduction="sum")
        for name, grad in zip(names, torch.autograd.grad(nll, params), strict=True):
            fisher[name] += grad.double() ** 2
    for handle in handles:
        handle.remove()
    return {k: v / n for k, v in fisher.items()}, grams


@pytest.fixture(scope="module")
def reference(family):
    _, experts, _ = family
    return [reference_stats(e, TASKS[i], N) for i, e in enumerate(experts)]


def test_stats_folder_records_what_was_measured(family):
    _, experts, stats = family
    info = json.loads((stats[0] / "stats.json").read_text())
    assert info["kinds"] == ["fisher", "regmean"]
    assert info["data"] == {"task": "addition", "split": "train", "seed": 0, "n": N}
    assert info["examples"] == N and info["fisher"]["label"] == "gold" and info["fisher"]["batch_size"] == 1
    assert info["model"] == str(experts[0]) and "torch" in info["versions"]
    weights = load_file(experts[0] / "model.safetensors")
    fisher = load_file(stats[0] / "fisher.safetensors")
    grams = load_file(stats[0] / "regmean.safetensors")
    assert set(fisher) == set(weights)
    assert all(fisher[k].shape == weights[k].shape for k in fisher)
    linear = {k for k, v in weights.items() if v.dim() == 2 and "embed" not in k}
    assert set(grams) == linear
    assert all(grams[k].shape == (weights[k].shape[1],) * 2 for k in grams)


def test_stats_equal_an_independent_computation(family, reference):
    _, _, stats = family
    for folder, (fisher, grams) in zip(stats, reference, strict=True):
        got_f = load_file(folder / "fisher.safetensors")
        got_g = load_file(folder / "regmean.safetensors")
        assert set(got_g) == set(grams)
        for name, want in fisher.items():
            torch.testing.assert_close(got_f[name].double(), want, rtol=1e-4, atol=1e-12)
        for name, want in grams.items():
            torch.testing.assert_close(got_g[name].double(), want, rtol=1e-5, atol=1e-5)


def test_fisher_merge_matches_the_formula(family, reference, tmp_path):
    _, experts, stats = family
    w = (1.0, 0.5)
    graft("merge", write_recipe(tmp_path / "r.yaml", "fisher", experts, stats, weights=w), "-o", tmp_path / "out")
    merged = weights_of(tmp_path / "out")
    xs = [weights_of(e) for e in experts]
    for name, got in merged.items():
        fs = [reference[i][0][name] + 1e-8 for i in range(2)]
        want = sum(w[i] * fs[i] * xs[i][name] for i in range(2)) / sum(w[i] * fs[i] for i in range(2))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_regmean_merge_matches_the_formula(family, reference, tmp_path):
    _, experts, stats = family
    alpha = 0.8
    recipe = write_recipe(tmp_path / "r.yaml", "regmean", experts, stats, parameters={"alpha": alpha})
    graft("merge", recipe, "-o", tmp_path / "out")
    merged = weights_of(tmp_path / "out")
    xs = [weights_of(e) for e in experts]
    grams = [reference[i][1] for i in range(2)]
    solved = 0
    for name, got in merged.items():
        if name not in grams[0]:  # embeddings and norms: the average
            torch.testing.assert_close(got, (xs[0][name] + xs[1][name]) / 2, rtol=1e-6, atol=1e-7)
            continue
        shrunk = [alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g)) for g in (gr[name] for gr in grams)]
        num = xs[0][name] @ shrunk[0] + xs[1][name] @ shrunk[1]
        want = torch.linalg.solve(shrunk[0] + shrunk[1], num.T).T
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
        assert not torch.allclose(got, (xs[0][name] + xs[1][name]) / 2, atol=1e-4)
        solved += 1
    assert solved == len(grams[0])


@pytest.mark.parametrize("method", ["fisher", "regmean"])
def test_requested_stats_give_the_same_output_as_precomputed(family, tmp_path, method):
    _, experts, stats = family
    requests = [{"task": TASKS[i], "n": N} for i in range(2)]
    graft("merge", write_recipe(tmp_path / "a.yaml", method, experts, stats), "-o", tmp_path / "a")
    graft("merge", write_recipe(tmp_path / "b.yaml", method, experts, requests), "-o", tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert yaml.safe_load((tmp_path / "b" / "graft_recipe.yaml").read_text())["models"][0]["stats"] == requests[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "a.yaml", "b", "b.yaml"]  # temporary stats removed


def test_dare_prestep_then_fisher_equals_fisher_of_dared_experts(family, tmp_path):
    base, experts, stats = family
    recipe = write_recipe(tmp_path / "d.yaml", "fisher", experts, stats, base_model=str(base), seed=5)
    recipe_dare = write_recipe(
        tmp_path / "dd.yaml", "fisher", experts, stats, base_model=str(base), seed=5, dare={"density": 0.5}
    )
    graft("merge", recipe, "-o", tmp_path / "plain")
    graft("merge", recipe_dare, "-o", tmp_path / "dared")
    b = load_file(base / "model.safetensors")
    manual = []
    for i, expert in enumerate(experts):  # base + DARE(expert − base) with the merge's seeds, saved as experts
        x = load_file(expert / "model.safetensors")
        state = {k: b[k] + dare(x[k] - b[k], density=0.5, seed=expert_seed(5, i, k)) for k in x}
        folder = tmp_path / f"manual{i}"
        folder.mkdir()
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text((expert / "config.json").read_text())
        manual.append(folder)
    graft("merge", write_recipe(tmp_path / "m.yaml", "fisher", manual, stats), "-o", tmp_path / "manual")
    plain, dared, by_hand = (load_file(tmp_path / n / "model.safetensors") for n in ("plain", "dared", "manual"))
    for name in dared:
        torch.testing.assert_close(dared[name], by_hand[name], rtol=1e-6, atol=1e-7)
    assert any(not torch.allclose(dared[k], plain[k]) for k in dared)


def test_dare_without_a_base_is_a_recipe_error(family, tmp_path):
    _, experts, stats = family
    recipe = write_recipe(tmp_path / "r.yaml", "fisher", experts, stats, dare={"density": 0.5})
    err = fails("validate", recipe)
    assert isinstance(err, RecipeError) and "base_model" in str(err) and "`fisher` itself needs none" in str(err)


def test_missing_stats_name_the_model_entry_and_what_to_write(family, tmp_path):
    _, experts, stats = family
    recipe = write_recipe(tmp_path / "r.yaml", "regmean", experts, [stats[0], None])
    text = yaml.safe_load(recipe.read_text())
    del text["models"][1]["stats"]
    recipe.write_text(yaml.safe_dump(text))
    err = fails("merge", recipe, "-o", tmp_path / "out")
    assert isinstance(err, RecipeError)
    assert "`models[1].stats`" in str(err) and f"graft stats {experts[1]} --kind regmean" in str(err)
    assert "stats: {task: TASK, n: 256}" in str(err)
    assert not (tmp_path / "out").exists()


def test_wrong_kind_of_stats_is_refused_before_merging(family, tmp_path):
    _, experts, stats = family
    graft("stats", experts[1], "--task", "reversal", "--n", 2, "--kind", "regmean", "-o", tmp_path / "gram_only")
    assert json.loads((tmp_path / "gram_only" / "stats.json").read_text())["kinds"] == ["regmean"]
    recipe = write_recipe(tmp_path / "r.yaml", "fisher", experts, [stats[0], tmp_path / "gram_only"])
    err = fails("validate", recipe)
    assert isinstance(err, RecipeError) and "`models[1].stats`" in str(err)
    assert "measured regmean" in str(err) and "needs fisher statistics" in str(err)


def test_other_stats_errors(family, tmp_path):
    _, experts, stats = family
    not_stats = write_recipe(tmp_path / "a.yaml", "fisher", experts, [stats[0], experts[1]])
    assert "not a statistics folder" in str(fails("validate", not_stats))
    unused = write_recipe(tmp_path / "b.yaml", "linear", experts, stats)
    assert "uses no statistics" in str(fails("validate", unused))
    bad_task = write_recipe(tmp_path / "c.yaml", "fisher", experts, [{"task": "additon"}, stats[1]])
    assert "Did you mean 'addition'" in str(fails("validate", bad_task))
    # Statistics of another model: the shapes say so before any weight is read.
    other = tmp_path / "other"
    other.mkdir()
    (other / "stats.json").write_text((stats[0] / "stats.json").read_text())
    fisher = load_file(stats[0] / "fisher.safetensors")
    save_file({k: v[..., :1].contiguous() for k, v in fisher.items()}, str(other / "fisher.safetensors"))
    err = fails("validate", write_recipe(tmp_path / "d.yaml", "fisher", experts, [other, stats[1]]))
    assert isinstance(err, CheckpointError) and "have shape" in str(err)


def test_stats_cli_errors(family, tmp_path):
    _, experts, stats = family
    assert isinstance(fails("stats", experts[0], "--task", "addition", "-o", stats[0]), OutputExistsError)
    assert "exactly one" in str(fails("stats", experts[0], "-o", tmp_path / "s"))
    assert "--kind" in str(fails("stats", experts[0], "--task", "addition", "--kind", "hessian", "-o", tmp_path / "s"))
    if not torch.cuda.is_available():
        err = fails("stats", experts[0], "--task", "addition", "--device", "cuda", "-o", tmp_path / "s")
        assert "no CUDA device" in str(err)
    assert not (tmp_path / "s").exists()


def test_stats_from_jsonl(family, tmp_path):
    _, experts, _ = family
    rows = [{"prompt": "add\n1+2\n=", "completion": "3"}, {"prompt": "add\n2+2\n=", "completion": "4"}]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    graft("stats", experts[0], "--jsonl", data, "--kind", "fisher", "-o", tmp_path / "s")
    info = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert info["data"] == {"jsonl": str(data), "n": 2} and info["kinds"] == ["fisher"]
    assert not (tmp_path / "s" / "regmean.safetensors").exists()


def test_tied_head(tmp_path):
    """A tied head's Fisher is its embedding's; its Gram is kept as `lm_head.weight`, and the shared
    matrix (stored once, as the embedding) is averaged by regmean."""
    from transformers import LlamaForCausalLM

    from graftkit.zoo.tokenizer import build_tokenizer

    torch.manual_seed(0)
    base = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True))
    experts = []
    for i in range(2):
        folder = tmp_path / f"e{i}"
        perturbed(base, seed=i).save_pretrained(folder)
        build_tokenizer().save_pretrained(folder)
        graft("stats", folder, "--task", "addition", "--n", 2, "-o", tmp_path / f"s{i}")
        experts.append(folder)
    stored = load_file(experts[0] / "model.safetensors")
    assert "lm_head.weight" not in stored
    assert "lm_head.weight" not in load_file(tmp_path / "s0" / "fisher.safetensors")
    assert "lm_head.weight" in load_file(tmp_path / "s0" / "regmean.safetensors")
    graft(
        "merge",
        write_recipe(tmp_path / "r.yaml", "regmean", experts, [tmp_path / "s0", tmp_path / "s1"]),
        "-o",
        tmp_path / "out",
    )
    merged = load_file(tmp_path / "out" / "model.safetensors")
    xs = [load_file(e / "model.safetensors") for e in experts]
    embed = "model.embed_tokens.weight"
    torch.testing.assert_close(merged[embed], (xs[0][embed] + xs[1][embed]) / 2)
    assert "lm_head.weight" not in merged


def test_tied_experts_under_an_untied_base_weigh_their_head_by_the_embedding_fisher(tmp_path):
    from transformers import LlamaForCausalLM

    from graftkit.zoo.tokenizer import build_tokenizer

    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=False)).save_pretrained(tmp_path / "base")
    tied = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True))
    experts = []
    for i in range(2):
        folder = tmp_path / f"e{i}"
        perturbed(tied, seed=i).save_pretrained(folder)
        build_tokenizer().save_pretrained(folder)
        experts.append(folder)
    requests = [{"task": "addition", "n": 2}, {"task": "reversal", "n": 2}]
    recipe = write_recipe(tmp_path / "r.yaml", "fisher", experts, requests, base_model=str(tmp_path / "base"))
    assert "the merge computes first" in invoke("validate", recipe).output
    graft("merge", recipe, "-o", tmp_path / "out")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(merged["lm_head.weight"], merged["model.embed_tokens.weight"])


def test_statistics_are_read_lazily_once_per_tensor(family):
    from graftkit.merge.executor import execute
    from graftkit.merge.recipe import parse_recipe
    from graftkit.merge.run import open_plan
    from graftkit.merge.sources import DictSink
    from graftkit.merge.validate import resolve_recipe

    _, experts, stats = family
    recipe = parse_recipe(
        {
            "merge_method": "regmean",
            "models": [{"model": str(e), "stats": str(s)} for e, s in zip(experts, stats, strict=True)],
        }
    )
    reads: list[str] = []

    class Counting:
        def __init__(self, source):
            self.source, self.tensors, self.config = source, source.tensors, None

        def read(self, name):
            reads.append(name)
            return self.source.read(name)

    with open_plan(resolve_recipe(recipe), recipe) as plan:
        plan.stats = [Counting(s) for s in plan.stats]
        execute(plan, DictSink())
        with_stats = [job.name for job in plan.jobs if job.stats]
    assert sorted(reads) == sorted(with_stats * 2)  # each expert's Gram of each linear layer, once
    assert all(name.endswith("proj.weight") or name == "lm_head.weight" for name in with_stats)


@pytest.mark.parametrize("method", ["fisher", "regmean"])
def test_merge_state_dicts_with_statistics_equals_the_cli(family, tmp_path, method):
    import graftkit

    _, experts, stats = family
    graft("merge", write_recipe(tmp_path / "r.yaml", method, experts, stats, weights=(1.0, 0.5)), "-o", tmp_path / "o")
    on_disk = load_file(tmp_path / "o" / "model.safetensors")
    states = [load_file(e / "model.safetensors") for e in experts]
    measured = [load_file(s / f"{method}.safetensors") for s in stats]
    merged = graftkit.merge_state_dicts(method, None, states, stats=measured, weight=[1.0, 0.5])
    assert all(torch.equal(merged[k], on_disk[k]) for k in on_disk)
    with pytest.raises(RecipeError, match="models\\[0\\].stats"):
        graftkit.merge_state_dicts(method, None, states)


def test_a_tensor_read_from_the_base_is_merged_without_statistics(family, tmp_path):
    import shutil

    from graftkit.merge.recipe import parse_recipe
    from graftkit.merge.run import open_plan
    from graftkit.merge.validate import resolve_recipe

    base, experts, stats = family
    missing = "model.norm.weight"
    lacking, lacking_stats = tmp_path / "e1", tmp_path / "s1"
    shutil.copytree(experts[1], lacking)
    shutil.copytree(stats[1], lacking_stats)
    for folder, file in ((lacking, "model.safetensors"), (lacking_stats, "fisher.safetensors")):
        state = load_file(folder / file)
        del state[missing]
        save_file(state, str(folder / file), metadata={"format": "pt"})
    recipe = write_recipe(
        tmp_path / "r.yaml", "fisher", [experts[0], lacking], [stats[0], lacking_stats], base_model=str(base)
    )
    text = yaml.safe_load(recipe.read_text())
    text["on_missing"] = "base"
    parsed = parse_recipe(text)
    with open_plan(resolve_recipe(parsed), parsed) as plan:
        assert any(missing in w and "without statistics" in w for w in plan.warnings)
        assert [j.stats for j in plan.jobs if j.name == missing] == [False]
        assert all(j.stats for j in plan.jobs if j.name != missing)
    recipe.write_text(yaml.safe_dump(text))
    graft("merge", recipe, "-o", tmp_path / "out")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    want = (load_file(experts[0] / "model.safetensors")[missing] + load_file(base / "model.safetensors")[missing]) / 2
    torch.testing.assert_close(merged[missing], want)
