#!/usr/bin/env bash
# train-vln end to end on the tiny models (CPU, ~1 minute): a tiny random Qwen2.5-VL folder, generated
# trajectories, the VGGT feature cache, training from the cache, the run's monitor view, a prediction.
# Nothing is downloaded: the tiny VGGT (`tiny`) and the tiny Qwen are generated locally.
#   examples/train_vln_tiny.sh            # everything under vln_out/
#   OUT=/tmp/v PYTHON=python examples/train_vln_tiny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-vln_out}
rm -rf "$OUT"
mkdir -p "$OUT"
export VGGTCTL_HOME="$(cd "$OUT" && pwd)/home"  # OUT may be relative or absolute
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the tiny models are overhead-bound; more threads only contend

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "A tiny random Qwen2.5-VL folder (model, local tokenizer, image processor)" \
  "$PY" -m vggtctl train-vln init-tiny --out "$OUT/tiny-qwen"
step "Generated trajectories: 2 episodes of 6 frames (step_XXXX_<action>.png + instruction.txt)" \
  "$PY" -c "from vggtctl.services.vln.synthetic import write_trajectories; write_trajectories('$OUT/traj', episodes=2, steps=6)"
step "The VGGT feature cache for that data (layer 22, width 112, fp32)" \
  "$PY" -m vggtctl cache build --data "$OUT/traj" --cache-dir "$OUT/vcache" --model tiny --image-width 112 --dtype fp32
step "train-vln from the cache (every sample must hit)" \
  "$PY" -m vggtctl train-vln --data "$OUT/traj" --model "$OUT/tiny-qwen" --vggt tiny --output-dir "$OUT/run" \
  --cache-dir "$OUT/vcache" --cache-required --max-steps 6 --device cpu \
  image_width=112 merger_hidden=64 num_workers=0 grad_accum=2 lr_llm=1e-3 lr_merger=1e-3
step "The run as vggtctl monitor sees it" \
  "$PY" -m vggtctl monitor "$OUT/run"
tail -n 1 "$OUT/run/metrics.jsonl"
step "The exported model on the last step of episode 0" \
  "$PY" -m vggtctl train-vln predict --checkpoint "$OUT/run/export" --sample "$OUT/traj/ep000" --device cpu
