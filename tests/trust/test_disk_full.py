"""A disk that fills up mid-write: a clear error, no folder at the output path, no partial left."""

import errno

import pytest

import graftkit
from graftkit.errors import GraftError
from graftkit.io import writer as writer_module


def test_disk_full_mid_write_fails_cleanly(tmp_path, llama_family, monkeypatch):
    base, experts = llama_family
    real = writer_module._pwrite_all
    calls = {"n": 0}

    def filling_disk(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 5:  # headers and a few tensors fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(writer_module, "_pwrite_all", filling_disk)
    recipe = {"merge_method": "ties", "base_model": str(base), "models": [{"model": str(e)} for e in experts]}
    with pytest.raises(GraftError, match="filled up"):
        graftkit.merge(recipe, tmp_path / "out", progress=False)
    assert calls["n"] > 5
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the output nor a partial folder
