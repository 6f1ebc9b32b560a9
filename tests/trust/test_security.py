"""Security (issue #5 part 5): checkpoints and recipes are data, never code.

- a ``.bin`` carrying a pickle ``__reduce__`` payload is refused and the payload never runs;
- ``trust_remote_code`` is never turned on, and merge inputs are never unpickled unsafely;
- recipe paths are only paths: shell syntax is not executed, traversal just fails to find weights;
- YAML tags that construct Python objects are refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tests.conftest import save_family

from graftkit.errors import CheckpointError, RecipeError
from graftkit.merge.recipe import parse_recipe
from graftkit.merge.report import validate_recipe

SRC = Path(__file__).resolve().parents[2] / "src" / "graftkit"
GRAFT = Path(sys.executable).with_name("graft")


class Payload:
    """Unpickling this runs ``touch SENTINEL``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> tuple[Path, list[Path]]:
    return save_family(tmp_path_factory.mktemp("sec"), "llama", n_experts=1)


@pytest.fixture
def malicious(tmp_path) -> tuple[Path, Path]:
    """A model folder whose pytorch_model.bin holds tensors plus a code-running object."""
    sentinel = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"model.embed_tokens.weight": torch.zeros(96, 32), "x": Payload(sentinel)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 32}))
    return folder, sentinel


def test_the_payload_is_real(malicious):
    """Sanity check of the test itself: an unsafe load does run it."""
    folder, sentinel = malicious
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert sentinel.exists()


def _recipe(path: Path, models, base=None, method="task_arithmetic") -> Path:
    data = {"merge_method": method, "models": [{"model": str(m)} for m in models]}
    if base is not None:
        data["base_model"] = str(base)
    path.write_text(yaml.safe_dump(data))
    return path


def _graft(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([str(GRAFT), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_pickle_payload_is_refused_by_validate_and_merge(family, malicious, tmp_path):
    base, _ = family
    folder, sentinel = malicious
    recipe = _recipe(tmp_path / "r.yaml", [folder], base)
    with pytest.raises(CheckpointError) as err:
        validate_recipe(recipe)
    assert str(folder / "pytorch_model.bin") in str(err.value) and "weights_only=True" in str(err.value)
    proc = _graft("merge", recipe, "-o", tmp_path / "out", "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "refused" in proc.stderr and "pytorch_model.bin" in proc.stderr
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists()


def test_pickle_payload_as_base_is_refused(family, malicious, tmp_path):
    _, experts = family
    folder, sentinel = malicious
    with pytest.raises(CheckpointError, match="refused"):
        validate_recipe(_recipe(tmp_path / "r.yaml", experts, folder))
    assert not sentinel.exists()


def _python_files() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    return files


def test_trust_remote_code_is_never_enabled():
    pattern = re.compile(r"trust_remote_code\s*=\s*(?!False\b)")
    offenders = [
        f"{path.relative_to(SRC)}:{i}"
        for path in _python_files()
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders


# Every torch.load in graftkit, its own resume checkpoints included, uses weights_only=True.
OWN_FILES_ONLY: set[str] = set()


def test_merge_inputs_are_never_unpickled_unsafely():
    unsafe = []
    for path in _python_files():
        rel = str(path.relative_to(SRC))
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load", line):
                unsafe.append(f"{rel}:{i}")
            if "torch.load(" in line and "weights_only=True" not in line and rel not in OWN_FILES_ONLY:
                unsafe.append(f"{rel}:{i}")
    assert not unsafe, unsafe
    for path in (SRC / "io").rglob("*.py"):
        assert "weights_only=False" not in path.read_text(), path


def test_yaml_is_loaded_safely():
    for path in _python_files():
        text = path.read_text()
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), path


@pytest.mark.parametrize(
    "name", ["$(touch {sentinel})", "`touch {sentinel}`", "x; touch {sentinel}", "x | touch {sentinel}"]
)
def test_shell_syntax_in_a_model_path_is_just_a_missing_folder(family, tmp_path, name):
    base, _ = family
    sentinel = tmp_path / "pwned"
    model = name.format(sentinel=sentinel)
    with pytest.raises(CheckpointError) as err:
        validate_recipe(_recipe(tmp_path / "r.yaml", [model], base))
    assert "no such file or folder" in str(err.value) and model in str(err.value)
    assert not sentinel.exists()


def test_shell_syntax_through_the_cli(family, tmp_path):
    base, _ = family
    sentinel = tmp_path / "pwned"
    proc = _graft("validate", _recipe(tmp_path / "r.yaml", [f"$(touch {sentinel})"], base))
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not sentinel.exists()


def test_path_traversal_only_finds_no_weights(family, tmp_path):
    base, _ = family
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    for model in ("../../etc", "../" * 40 + "etc", "/etc"):
        with pytest.raises(CheckpointError) as err:
            validate_recipe(_recipe(tmp_path / "r.yaml", [model], base))
        msg = str(err.value)
        assert "no such file or folder" in msg or "no model weights found" in msg, msg


def test_shard_index_cannot_point_outside_its_folder(family, tmp_path):
    base, _ = family
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.embed_tokens.weight": "../../../../etc/passwd"}})
    )
    with pytest.raises(CheckpointError, match="not a plain file name"):
        validate_recipe(_recipe(tmp_path / "r.yaml", [folder], base))


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {sentinel}']",
        "!!python/object/new:subprocess.Popen [['touch', '{sentinel}']]",
        "!!python/name:os.system",
    ],
)
def test_yaml_python_tags_are_refused(tmp_path, tag):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "r.yaml"
    path.write_text(f"merge_method: linear\nmodels:\n  - model: {tag.format(sentinel=sentinel)}\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_recipe(path)
    assert not sentinel.exists()
