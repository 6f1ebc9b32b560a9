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
