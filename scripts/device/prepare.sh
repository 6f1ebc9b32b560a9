#!/bin/bash
# Prepares, on the CPU machine, what scripts/device/calm_gpu.sh needs on a lent GPU machine (issue 14, item 3).
#
# The device machine has torch, transformers, peft, typer, rich and PyYAML but no pydantic and no gguf, and no
# network; a call carries at most 64 MiB. SmolLM2's GGUF (98 MB) therefore travels in two halves, in two calls
# to the same warm machine (it stays warm 30 s after a call; ignored paths survive between calls):
#   1. run(command="ls -l .dev/a", carry=[".dev/a"])                 the first half and the wheels
#   2. run(command="bash scripts/device/calm_gpu.sh", carry=[".dev/b"], timeout_s=570)   at once after 1
# .dev/ is in .gitignore. Usage (from the repository root, after make venv): bash scripts/device/prepare.sh
set -euo pipefail
gguf=$(.venv/bin/python -c "from graftkit.zoo.smollm2 import gguf_path; print(gguf_path())")
rm -rf .dev && mkdir -p .dev/a/wheels .dev/b
half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
head -c "$half" "$gguf" > .dev/a/smollm2.part
tail -c +"$((half + 1))" "$gguf" > .dev/b/smollm2.part
sha256sum "$gguf" | cut -d' ' -f1 > .dev/b/smollm2.sha256
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
# pydantic and what it needs beyond the device's packages; gguf (pure Python) for transformers' GGUF loader.
for pkg in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0 gguf==0.19.0; do
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $platforms -d .dev/a/wheels "$pkg"
done
du -ch .dev/a .dev/b | tail -1
