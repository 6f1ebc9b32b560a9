"""`graft merge --check`: a sane merge passes its probe; a blown-up merge is flagged (exit 2)."""

import pytest
import torch
import yaml
from tests.conftest import perturbed
from typer.testing import CliRunner

from graftkit.cli import app
from graftkit.errors import GraftError

runner = CliRunner()


@pytest.fixture(scope="module")
def family_with_tokenizer(tmp_path_factory):
    from graftkit.zoo.presets import new_model
    from graftkit.zoo.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("checked")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    base = new_model("xs", tokenizer, seed=0)
    paths = []
    for i, model in enumerate([base, perturbed(base, 1, 0.01), perturbed(base, 2, 0.01)]):
        path = root / ("base" if i == 0 else f"expert{i}")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths[0], paths[1:]


def run_merge(tmp_path, base, experts, **parameters):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "task_arithmetic",
                "base_model": str(base),
                "models": [{"model": str(e)} for e in experts],
                "parameters": parameters,
            }
        )
    )
    return runner.invoke(app, ["merge", str(recipe), "-o", str(tmp_path / "out"), "--check", "--no-progress"])


def test_sane_merge_passes_the_check(tmp_path, family_with_tokenizer):
    result = run_merge(tmp_path, *family_with_tokenizer, **{"lambda": 0.5})
    assert result.exit_code == 0, repr(result.exception)


def test_blown_up_merge_is_flagged(tmp_path, family_with_tokenizer):
    result = run_merge(tmp_path, *family_with_tokenizer, **{"lambda": 300.0})
    assert isinstance(result.exception, GraftError)
    assert result.exception.exit_code == 2
    assert "sanity" in str(result.exception)
