"""`graft inspect`: delta statistics against hand-computed values, pair metrics, DARE verdict, JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import save_file
from tests.conftest import tiny_llama_config
from typer.testing import CliRunner

from graftkit.errors import CheckpointError, TensorValueError
from graftkit.evaluate.inspect_deltas import inspect_deltas
from graftkit.inspect_cli import check_command, inspect_command


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A base and two experts whose deltas are written out by hand (see the expected values)."""
    root = tmp_path_factory.mktemp("crafted")
    a0, b0 = torch.zeros(4), torch.full((2, 2), 0.5)
    base = _save(root / "base.safetensors", {"a": a0, "b": b0})
    e0 = _save(
        root / "e0.safetensors",
        {
            "a": a0 + torch.tensor([0.001, -0.003, 0.006, 0.0]),
            "b": b0 + torch.tensor([[0.01, 0], [0, -0.0025]]),
        },
    )
    e1 = _save(
        root / "e1.safetensors",
        {
            "a": a0 + torch.tensor([-0.0015, -0.001, 0.004, 0.0]),
            "b": b0 + torch.tensor([[0, 0], [0, 0.0015]]),
        },
    )
    return base, [e0, e1]


def test_crafted_pair_matches_hand_computed_statistics(crafted):
    base, experts = crafted
    report = inspect_deltas(base, experts)
    approx = lambda x: pytest.approx(x, rel=1e-4, abs=1e-9)  # noqa: E731  (float32 deltas)

    e0, e1 = report.totals
    assert report.numel == 8
    # expert 0: |δ| = .001 .003 .006 0 | .01 0 0 .0025
    assert e0.mean_abs == approx(0.0225 / 8)
    assert e0.max_abs == approx(0.01)
    assert e0.share_above(0.002) == 4 / 8
    assert e0.share_above(0.005) == 2 / 8
    # expert 1: |δ| = .0015 .001 .004 0 | 0 0 0 .0015
    assert e1.mean_abs == approx(0.008 / 8)
    assert e1.max_abs == approx(0.004)
    assert e1.share_above(0.002) == 1 / 8
    assert e1.share_above(0.005) == 0
    # dot = -1.5e-6 + 3e-6 + 24e-6 - 3.75e-6; squared norms 152.25e-6 and 21.5e-6
    assert report.cosine(0, 1) == approx(21.75e-6 / math.sqrt(152.25e-6 * 21.5e-6))
    # conflicts: (.001, -.0015) and (-.0025, .0015); (.01, 0) is not one, a zero has no sign
    assert report.conflict_rate(0, 1) == 2 / 8
    assert report.any_conflict_rate is None  # only for three or more experts

    a = next(t for t in report.tensors if t.name == "a")
    assert a.shape == (4,)
    assert a.experts[0].mean_abs == approx(0.010 / 4)
    assert a.experts[0].max_abs == approx(0.006)
    assert a.pairs[0].conflicts == 1
    assert a.pairs[0].cosine(*a.experts) == approx(25.5e-6 / math.sqrt(46e-6 * 19.25e-6))


def test_identical_experts_have_cosine_one_and_negated_minus_one(tmp_path):
    gen = torch.Generator().manual_seed(0)
    base_w = torch.randn(64, 16, generator=gen)
    delta = 0.01 * torch.randn(64, 16, generator=gen)
    delta[:32] = 0.0  # half the entries unchanged: conflicts are counted over all entries
    base = _save(tmp_path / "base.safetensors", {"w": base_w})
    same1 = _save(tmp_path / "same1.safetensors", {"w": base_w + delta})
    same2 = _save(tmp_path / "same2.safetensors", {"w": base_w + delta})
    negated = _save(tmp_path / "neg.safetensors", {"w": base_w - delta})

    report = inspect_deltas(base, [same1, same2, negated])
    assert report.cosine(0, 1) == pytest.approx(1.0, abs=1e-5)
    assert report.cosine(0, 2) == pytest.approx(-1.0, abs=1e-5)
    assert report.conflict_rate(0, 1) == 0.0
    assert report.conflict_rate(0, 2) == 0.5
    assert report.conflict_rate(1, 2) == 0.5
    assert report.any_conflict_rate == 0.5


def _tiny_llama_family(root: Path, scales: dict[str, float]) -> tuple[Path, list[Path]]:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_llama_config(num_hidden_layers=2)
    base = LlamaForCausalLM(config)
    base.save_pretrained(root / "base")
    paths = []
    for i, (name, scale) in enumerate(scales.items()):
        gen = torch.Generator().manual_seed(100 + i)
        state = {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in base.state_dict().items()}
        expert = LlamaForCausalLM(config)
        expert.load_state_dict(state)
        expert.save_pretrained(root / name)
        paths.append(root / name)
    return root / "base", paths


@pytest.fixture(scope="module")
def llama_family(tmp_path_factory) -> tuple[Path, list[Path]]:
    return _tiny_llama_family(tmp_path_factory.mktemp("llama"), {"small": 0.001, "large": 0.1})


def test_dare_verdict_follows_the_size_of_the_deltas(llama_family):
    base, (small, large) = llama_family
    report = inspect_deltas(base, [small, large])
    # Gaussian noise of scale s has mean |δ| = s·sqrt(2/π).
    assert report.totals[0].mean_abs == pytest.approx(0.001 * math.sqrt(2 / math.pi), rel=0.02)
    assert report.totals[1].mean_abs == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.02)
    small_v, large_v = report.verdicts()
    assert small_v.dare_applicable and not large_v.dare_applicable
    assert "0.005" in large_v.reason
    # Independent noise: nearly orthogonal, and about half the entries conflict in sign.
    assert abs(report.cosine(0, 1)) < 0.05
    assert report.conflict_rate(0, 1) == pytest.approx(0.5, abs=0.02)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("inspect")(inspect_command)
    app.command("check")(check_command)
    return app


def test_json_output_parses_and_lists_every_tensor(llama_family):
    base, experts = llama_family
    result = CliRunner().invoke(_app(), ["inspect", str(base), *map(str, experts), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    names = {t["name"] for t in data["tensors"]}
    from graftkit.io import Checkpoint

    with Checkpoint.open(base) as ck:
        assert names == set(ck.tensors)  # all tensors, not only the table's top N
    assert [v["dare_applicable"] for v in data["verdicts"]] == [True, False]
    assert data["pairs"][0]["experts"] == [0, 1]
    assert data["totals"][1]["share_above"]["0.005"] > 0.9


def test_table_output_shows_verdicts_and_top_tensors(llama_family):
    base, experts = llama_family
    result = CliRunner().invoke(_app(), ["inspect", str(base), *map(str, experts), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "not applicable" in result.output
    assert "Top 3 of" in result.output
    assert "DARE applicable iff" in result.output


def test_skipped_tensors_are_listed_with_a_reason(tmp_path):
    base = _save(tmp_path / "b.safetensors", {"w": torch.zeros(3), "ids": torch.arange(3), "v": torch.zeros(2)})
    exp = _save(tmp_path / "e.safetensors", {"w": torch.ones(3), "ids": torch.arange(3), "v": torch.zeros(5)})
    report = inspect_deltas(base, [exp])
    reasons = dict(report.skipped)
    assert "not floating point" in reasons["ids"]
    assert "shape" in reasons["v"]
    assert [t.name for t in report.tensors] == ["w"]


def test_user_errors_name_the_problem(tmp_path):
    base = _save(tmp_path / "b.safetensors", {"w": torch.zeros(3)})
    bad = _save(tmp_path / "nan.safetensors", {"w": torch.tensor([0.0, math.nan, 0.0])})
    with pytest.raises(TensorValueError, match="'w'"):
        inspect_deltas(base, [bad])
    with pytest.raises(CheckpointError, match="at least one expert"):
        inspect_deltas(base, [])
    other = _save(tmp_path / "o.safetensors", {"x": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="share no floating-point tensor"):
        inspect_deltas(base, [other])


def test_expert_labels_are_distinct_when_folder_names_repeat():
    from graftkit.evaluate.inspect_render import expert_labels

    assert expert_labels(["a/x", "b/y"]) == ["x", "y"]
    assert expert_labels(["u1/model", "u2/model", "c/z"]) == ["u1/model", "u2/model", "z"]
