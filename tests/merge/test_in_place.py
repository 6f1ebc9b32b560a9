"""Methods that take ``out=`` are computed straight into the output shard; the bytes are the same."""

from __future__ import annotations

import pytest

import graftkit
from graftkit.io import ShardedWriter


def _merge(family, out, method="linear", **recipe_extra):
    base, experts = family
    recipe = {"merge_method": method, "base_model": str(base), "models": [{"model": str(e)} for e in experts]}
    if method == "ties":
        recipe["parameters"] = {"density": 0.5}
    graftkit.merge({**recipe, **recipe_extra}, out, progress=False)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".safetensors"}


@pytest.fixture
def places(monkeypatch):
    """Names the executor asked the writer for a place to compute into."""
    asked: list[str] = []
    real = ShardedWriter.destination

    def spy(self, name):
        asked.append(name)
        return real(self, name)

    monkeypatch.setattr(ShardedWriter, "destination", spy)
    return asked


def test_linear_float32_is_computed_in_place_with_the_same_bytes(llama_family, tmp_path, places, monkeypatch):
    in_place = _merge(llama_family, tmp_path / "in_place")
    assert places and len(places) == len(set(places))
    monkeypatch.setattr(ShardedWriter, "destination", None)  # no places offered: allocate and write
    assert _merge(llama_family, tmp_path / "written") == in_place


@pytest.mark.parametrize(("method", "extra"), [("linear", {"out_dtype": "bfloat16"}), ("ties", {})])
def test_casts_and_methods_without_out_are_written(llama_family, tmp_path, places, method, extra):
    _merge(llama_family, tmp_path / "out", method, **extra)
    assert places == []
