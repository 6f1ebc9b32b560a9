"""`graft` must start fast: importing the CLI may not import torch, transformers, peft, ray or matplotlib."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "ray", "matplotlib")


def test_cli_import_pulls_in_no_heavy_module():
    code = f"import sys, graftkit.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"importing graftkit.cli imported {loaded}"


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "graftkit", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("merge", "validate", "methods", "eval", "zoo", "compose", "inspect", "check", "demo"):
        assert command in out


def test_heavy_imports_freeze_what_they_import_and_leave_the_collector_on():
    code = (
        "import gc, graftkit.cli as c\n"
        "with c.heavy_imports():\n"
        "    assert not gc.isenabled()\n"
        "    import torch\n"
        "print(gc.isenabled(), gc.get_freeze_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 100_000  # torch's module objects, out of the collector's way
