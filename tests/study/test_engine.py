"""The shared study engine: cached and resumable units, the local backend, grids, results, reports."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from graftkit.errors import GraftError, UnknownNameError
from graftkit.study.engine import (
    LocalBackend,
    RayBackend,
    Unit,
    UnitStore,
    bootstrap_ci,
    expand,
    get_backend,
    line_plot,
    markdown_table,
    mean_ci,
    panel_plot,
    pick_subsets,
    resolve,
    run_info,
    write_rows,
)

HERE = Path(__file__).resolve().parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def calls(counter: Path) -> int:
    return int(counter.read_text()) if counter.exists() else 0


def test_unit_runs_once_then_comes_from_the_cache(tmp_path):
    store, counter = UnitStore(tmp_path / "cache"), tmp_path / "calls"
    unit = Unit("engine_units:counted", {"x": 3, "counter": str(counter)}, label="three")

    assert store.get(unit) is None
    assert store.run(unit) == {"double": 6}
    assert store.run(unit) == {"double": 6}
    assert calls(counter) == 1
    assert store.get(unit) == {"double": 6}

    folder = store.path(unit)
    assert folder == tmp_path / "cache" / "study" / "units" / unit.name
    assert store.result_path(unit) == folder
    assert json.loads((folder / "scores.json").read_text()) == {"x": 3}
    record = json.loads((folder / "result.json").read_text())
    assert record["unit"] == {"fn": "engine_units:counted", "inputs": dict(unit.inputs), "label": "three"}
    assert record["seconds"] >= 0 and record["result"] == {"double": 6}
    assert not (folder / "work").exists()
    assert not store.partial_path(unit).exists()


def test_key_follows_function_and_inputs_not_order_or_label(tmp_path):
    counter = str(tmp_path / "calls")
    unit = Unit("engine_units:counted", {"x": 1, "counter": counter})
    assert unit.key == Unit("engine_units:counted", {"counter": counter, "x": 1}, label="other").key
    assert unit.key != Unit("engine_units:counted", {"x": 2, "counter": counter}).key
    assert unit.key != Unit("engine_units:square_with_pid", {"x": 1, "counter": counter}).key
    assert unit.name == f"counted-{unit.key}"
    assert len({unit, Unit("engine_units:counted", {"counter": counter, "x": 1})}) == 1

    store = UnitStore(tmp_path / "cache")
    assert store.run(unit) == {"double": 2}
    assert store.run(Unit("engine_units:counted", {"counter": counter, "x": 1})) == {"double": 2}
    assert calls(Path(counter)) == 1
    assert store.run(Unit("engine_units:counted", {"x": 2, "counter": counter})) == {"double": 4}
    assert calls(Path(counter)) == 2


def test_a_failed_run_resumes_from_its_checkpoint(tmp_path):
    store = UnitStore(tmp_path)
    unit = Unit("engine_units:stepped", {"steps": 5, "fail_after": 2})
    with pytest.raises(RuntimeError, match="simulated kill"):
        store.run(unit)
    assert not store.path(unit).exists()
    ckpt = store.partial_path(unit) / "work" / "ckpt.json"
    assert json.loads(ckpt.read_text()) == {"done": 2, "starts": 1}

    assert store.run(unit) == {"done": 5, "starts": 2, "resumed_from": 2}
    assert not store.partial_path(unit).exists()


def test_a_killed_process_leaves_a_partial_run_that_resumes(tmp_path, monkeypatch):
    store = UnitStore(tmp_path)
    unit = Unit("engine_units:stepped", {"steps": 3})
    code = (
        "from graftkit.study.engine import Unit, UnitStore; "
        f"UnitStore({str(tmp_path)!r}).run(Unit('engine_units:stepped', {{'steps': 3}}))"
    )
    env = {**os.environ, "ENGINE_TEST_PAUSE": "120", "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    ckpt = store.partial_path(unit) / "work" / "ckpt.json"
    try:
        deadline = time.monotonic() + 60
        while not (ckpt.exists() and ckpt.read_text()):
            assert child.poll() is None, "the child exited before writing its checkpoint"
            assert time.monotonic() < deadline, "the child wrote no checkpoint within 60 s"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert json.loads(ckpt.read_text()) == {"done": 1, "starts": 1}
    assert not store.path(unit).exists()

    monkeypatch.delenv("ENGINE_TEST_PAUSE", raising=False)
    assert store.run(unit) == {"done": 3, "starts": 2, "resumed_from": 1}
    assert store.path(unit).exists() and not store.partial_path(unit).exists()


def test_resolve_names_the_bad_string():
    assert resolve("engine_units:counted").__name__ == "counted"
    for bad in ("engine_units.counted", "engine_units:missing", "no_such_module_xyz:fn", "engine_units:json"):
        with pytest.raises(GraftError, match=bad.replace(".", r"\.")):
            resolve(bad)


def test_local_backend_keeps_order_and_skips_cached_units(tmp_path):
    store, counter = UnitStore(tmp_path / "cache"), str(tmp_path / "calls")
    units = [Unit("engine_units:counted", {"x": x, "counter": counter}) for x in (3, 1, 2)]
    store.run(units[1])
    backend = get_backend("local")
    assert isinstance(backend, LocalBackend)
    assert backend.map(units, store, progress="units") == [{"double": 6}, {"double": 2}, {"double": 4}]
    assert calls(Path(counter)) == 3
    assert backend.map(units + units[:1], store) == [{"double": 6}, {"double": 2}, {"double": 4}, {"double": 6}]
    assert calls(Path(counter)) == 3


def test_backend_registry_and_missing_ray(tmp_path, monkeypatch):
    assert isinstance(get_backend("ray", num_cpus=1), RayBackend)
    with pytest.raises(UnknownNameError, match="local"):
        get_backend("lokal")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    unit = Unit("engine_units:square_with_pid", {"x": 2})
    with pytest.raises(GraftError, match=r"install graftkit\[ray\]"):
        RayBackend().map([unit], UnitStore(tmp_path))


def test_expand_is_a_stable_cartesian_product():
    points = expand({"method": ["ties", "dare"], "k": [2, 4, 8]})
    assert len(points) == 6
    assert points[:3] == [{"method": "ties", "k": 2}, {"method": "ties", "k": 4}, {"method": "ties", "k": 8}]
    assert points[3] == {"method": "dare", "k": 2}
    assert expand({}) == [{}]
    assert expand({"a": [1], "b": []}) == []


def test_pick_subsets_is_seeded_sized_and_in_pool_order():
    pool = [f"t{i}" for i in range(8)]
    seeds = list(range(10))
    subsets = pick_subsets(pool, 3, seeds)
    assert subsets == pick_subsets(pool, 3, seeds)
    assert list(subsets) == seeds
    for subset in subsets.values():
        assert len(subset) == 3 and len(set(subset)) == 3
        assert list(subset) == [name for name in pool if name in subset]
    assert len(set(subsets.values())) >= 5
    assert pick_subsets(pool, 3, [7]) == {7: subsets[7]}  # a seed's subset ignores the other seeds
    assert pick_subsets(pool, 4, [0])[0] != subsets[0]
    assert pick_subsets(pool, 8, [0, 1]) == {0: tuple(pool), 1: tuple(pool)}
    with pytest.raises(ValueError):
        pick_subsets(pool, 9, [0])
    with pytest.raises(ValueError):
        pick_subsets(["a", "a"], 1, [0])


def test_write_rows_round_trips_json_and_csv(tmp_path):
    rows = [{"method": "ties", "score": 0.5}, {"method": "dare", "score": None, "tasks": ["a", "b"]}]
    info = {"git_revision": "abc"}
    path = tmp_path / "out" / "rows.json"
    write_rows(rows, path, info)
    assert json.loads(path.read_text()) == {"run_info": info, "rows": rows}
    with open(path.with_suffix(".csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["method", "score", "tasks"]
    assert table == [
        {"method": "ties", "score": "0.5", "tasks": ""},
        {"method": "dare", "score": "", "tasks": '["a", "b"]'},
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.csv", "rows.json"]  # no temporary left


def test_run_info_names_the_revision_and_versions():
    info = run_info()
    revision = info["git_revision"]
    assert isinstance(revision, str) and len(revision) == 40 and int(revision, 16) >= 0
    assert isinstance(info["git_dirty"], bool)
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["versions"]["graftkit"] and info["versions"]["torch"]
    assert datetime.fromisoformat(info["timestamp"]).utcoffset() == timedelta(0)
    json.dumps(info)


def test_mean_ci_and_bootstrap_ci():
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 1.96 * math.sqrt(5 / 3) / 2  # sample std sqrt(5/3), sqrt(n) = 2
    assert mean == 2.5 and low == pytest.approx(2.5 - half) and high == pytest.approx(2.5 + half)
    assert mean_ci([0.7]) == (0.7, 0.7, 0.7)
    assert mean_ci([1.0, 3.0], z=1.0) == pytest.approx((2.0, 2.0 - math.sqrt(2) / math.sqrt(2), 3.0))
    with pytest.raises(ValueError):
        mean_ci([])

    values = [0.2, 0.4, 0.5, 0.9, 0.3]
    boot = bootstrap_ci(values, n_boot=500, seed=1)
    assert boot == bootstrap_ci(values, n_boot=500, seed=1)
    assert boot[1] < boot[0] < boot[2] and boot[0] == pytest.approx(0.46)
    assert min(values) <= boot[1] and boot[2] <= max(values)
    assert bootstrap_ci([0.5, 0.5], n_boot=50) == (0.5, 0.5, 0.5)


def test_markdown_table_formats_floats_and_none():
    table = markdown_table(["method", "k", "acc"], [["ties", 2, 0.456], ["a|b", 4, None]])
    assert table == "| method | k | acc |\n|---|---|---|\n| ties | 2 | 0.46 |\n| a\\|b | 4 | – |\n"
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [[1]])


def test_plots_write_pngs(tmp_path):
    series = {"ties": [(2, 0.8, 0.7, 0.9), (4, 0.7, None, None)], "mean": [(2, 0.6, 0.5, 0.65), (4, 0.5, 0.4, 0.6)]}
    line = line_plot(series, tmp_path / "line.png", title="t", xlabel="k", ylabel="acc", hline=0.5, hline_label="base")
    panels = panel_plot(
        {"llama": series, "gpt2": {"ties": series["ties"]}},
        tmp_path / "figs" / "panels.png",
        title="t",
        xlabel="k",
        ylabel="acc",
        hlines={"llama": 0.4},
    )
    for path in (line, panels):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["line.png", "panels.png"]


def test_plots_accept_a_bound_that_misses_its_point_by_rounding(tmp_path):
    # Wilson's upper bound at 64/64 can come out as 0.9999999999999999 < 1.0.
    series = {"a": [(0.0, 1.0, 0.94, 1.0 - 1e-16), (0.5, 0.8, 0.7, 0.9)]}
    assert line_plot(series, tmp_path / "p.png", title="t", xlabel="p", ylabel="s").stat().st_size > 0
