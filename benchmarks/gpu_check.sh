#!/usr/bin/env bash
# One script for a borrowed CUDA machine (`make gpu-check OUT=dir`): the gpu-marked tests, then the model
# benchmark in bf16 (1..100 frames). Everything lands in $OUT as JSON/text so one lease is used in one go
# (< 8 minutes). Runs from the source tree with the machine's own CUDA PyTorch (no install step, no network):
# PYTHON defaults to .venv/bin/python when that venv has CUDA, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-results}}
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PYTHON=.venv/bin/python
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
$PYTHON -m vggtctl env --json > "$OUT/env.json" 2>&1 || true
timeout 150 $PYTHON -m pytest -q -p no:cacheprovider -m gpu tests/test_model_gpu.py > "$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit: $?" | tee -a "$OUT/gpu-tests.txt"
VGGTCTL_BENCH_OUT="$OUT" timeout 330 $PYTHON benchmarks/bench_model.py --device cuda --dtype bf16 --timeout 120 \
  > "$OUT/bench-model.txt" 2>&1
echo "bench exit: $?" | tee -a "$OUT/bench-model.txt"
ls -l "$OUT"
