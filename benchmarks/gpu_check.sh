#!/usr/bin/env bash
# One script for a borrowed CUDA machine (`make gpu-check OUT=dir`): the gpu-marked tests, then the model
# benchmark in bf16. Everything lands in $OUT as JSON/text so one lease is used in one go (< 8 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-results}}
mkdir -p "$OUT"
PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
$PY -m vggtctl env --json > "$OUT/env.json" 2>&1 || true
timeout 180 $PY -m pytest -q -m gpu tests --junitxml="$OUT/gpu-tests.xml" > "$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit: $?" | tee -a "$OUT/gpu-tests.txt"
VGGTCTL_BENCH_OUT="$OUT" timeout 300 $PY benchmarks/bench_model.py --device cuda --dtype bf16 --gpu-table > "$OUT/bench-model.txt" 2>&1
echo "bench exit: $?" | tee -a "$OUT/bench-model.txt"
ls -l "$OUT"
