#!/usr/bin/env bash
# One script for a borrowed CUDA machine (`make gpu-check OUT=dir`): every GPU number the open issues ask for
# that fits one lease, most valuable first, all written under $OUT (JSON + logs) with a short $OUT/summary.txt.
# Runs from the source tree with the machine's own CUDA PyTorch (no install step, no network): PYTHON defaults
# to .venv/bin/python when that venv has CUDA, else python3. Seeded 1B weights are built on the GPU in each
# process (no 5 GB weights file is written).
#
# Time budget (wall seconds; GPU_CHECK_BUDGET, default 540 = 9 min, is the whole run). Each step runs under its
# own `timeout`, capped by what is left of the budget; a step with < 20 s left is skipped (summary: "skipped").
#   setup      ~10  nvidia-smi, vggtctl env
#   tests      120  pytest -m gpu tests (all gpu-marked tests)
#   quantize    90  bench_quantize --device cuda: 1B fp32/bf16 vs int8 dynamic/weight, fp8 weight/dynamic,
#                   224^2 and 518^2, 2 frames (issue 13)
#   finetune 3x 50  bench_finetune --device cuda, 1B, 4 frames 518^2, strategy a, b, c (one process each),
#                   gradient checkpointing on/off, 2 steps each, bf16 autocast (issue 14)
#   scale      190+ bench_scale --device cuda --dtype bf16 --seeded, one row per process: 100 (40 s),
#                   300 (90 s), 1000 chunked 200/20 (60 s), then 600 (240 s) and 1000 frames one pass with what
#                   is left; the one-pass rows stop growing at the first that fails or times out (issue 17).
#                   Estimate (global attention ~ frames^2 at ~400 TFLOP/s bf16): 300 ~40 s, 600 ~170 s,
#                   1000 ~460 s, so 600/1000 one pass only fit when the earlier steps finish well under their caps
#                   (else run them alone: GPU_CHECK_BUDGET=590 with only that row, see bench_scale.py --rows)
#   vln         60  bench_train_vln --device cuda: tiny Qwen + tiny VGGT
#   vln-3b     150  bench_train_vln --device cuda --size 3b --steps 2: Qwen2.5-VL-3B architecture (random bf16
#                   weights, 7.5 GB written then loaded) + seeded VGGT-1B, batch 1 x accumulation 8, 9 frames
#                   at 644, peak GPU memory (issue 18)
#   vln-7b     240  the same with --size 7b (16.6 GB written), only when >= 120 s remain
#   model     rest  bench_model --device cuda --dtype bf16, when >= 60 s remain
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-results}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PYTHON=.venv/bin/python
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export VGGTCTL_BENCH_OUT="$OUT"
BUDGET=${GPU_CHECK_BUDGET:-540}
START=$SECONDS
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

# step NAME CAP LOG CMD...: run CMD under timeout min(CAP, budget left); one summary line per step.
step() {
  local name=$1 cap=$2 log=$3
  shift 3
  local left=$((BUDGET - (SECONDS - START)))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -lt 20 ]; then
    echo "$name: skipped (budget left ${left}s)" | tee -a "$SUMMARY"
    return 99
  fi
  local t0=$SECONDS
  timeout -k 10 "$cap" "$@" > "$log" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -ne 0 ] && verdict="exit $rc"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && verdict="timeout after ${cap}s"
  echo "$name: $verdict ($((SECONDS - t0))s, log $(basename "$log"))" | tee -a "$SUMMARY"
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
$PYTHON -m vggtctl env --json > "$OUT/env.json" 2>&1 || true
echo "gpu: $(tail -n +2 "$OUT/nvidia-smi.csv" | head -1)" | tee -a "$SUMMARY"

step tests 120 "$OUT/gpu-tests.txt" $PYTHON -m pytest -q -p no:cacheprovider -m gpu tests
tail -1 "$OUT/gpu-tests.txt" 2>/dev/null | sed 's/^/  /' >> "$SUMMARY"

step quantize 90 "$OUT/quantize.txt" $PYTHON benchmarks/bench_quantize.py --device cuda --sizes 224,518 \
  --frames 2 --repeats 3 --out "$OUT"

for s in a b c; do
  step "finetune-$s" 50 "$OUT/finetune-$s.txt" $PYTHON benchmarks/bench_finetune.py --only-1b --arch-1b \
    --device cuda --strategy-1b "$s" --frames-1b 4 --size-1b 518 --modes-1b 1010 --out "$OUT/finetune-$s"
done

# scale: rows merged into $OUT/scale.json; the inner --timeout records a timed-out row there too.
scale_row() {  # scale_row ROW CAP
  local cap=$2 left=$((BUDGET - (SECONDS - START)))
  [ "$cap" -gt "$left" ] && cap=$left
  step "scale-$1" "$cap" "$OUT/scale-${1//:/_}.txt" $PYTHON benchmarks/bench_scale.py --preset vggt-1b --device cuda \
    --dtype bf16 --seeded --merge --rows "$1" --timeout $((cap > 30 ? cap - 10 : 20))
}
if scale_row 100x518x518 40; then
  scale_row 300x518x518 90 && grow=1 || grow=0
  scale_row 1000x518x518:200:20 60
  if [ "$grow" = 1 ]; then
    scale_row 600x518x518 240 && scale_row 1000x518x518 600
  fi
fi

step vln-tiny 60 "$OUT/train-vln.txt" $PYTHON benchmarks/bench_train_vln.py --device cuda --steps 3 --out "$OUT"
step vln-3b 150 "$OUT/train-vln-3b.txt" $PYTHON benchmarks/bench_train_vln.py --device cuda --size 3b --steps 2 \
  --out "$OUT"
if [ $((BUDGET - (SECONDS - START))) -ge 120 ]; then
  step vln-7b 240 "$OUT/train-vln-7b.txt" $PYTHON benchmarks/bench_train_vln.py --device cuda --size 7b --steps 2 \
    --out "$OUT"
else
  echo "vln-7b: skipped (budget)" | tee -a "$SUMMARY"
fi

if [ $((BUDGET - (SECONDS - START))) -ge 60 ]; then
  step model 600 "$OUT/bench-model.txt" $PYTHON benchmarks/bench_model.py --device cuda --dtype bf16 --timeout 60
else
  echo "model: skipped (budget)" | tee -a "$SUMMARY"
fi

# The numbers, one line each, from the JSON files (whatever exists).
$PYTHON - "$OUT" >> "$SUMMARY" 2>&1 <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])


def load(p):
    try:
        return json.loads(p.read_text())
    except Exception:
        return None


q = load(out / "quantize_cuda.json")
for row in (q or {}).get("rows", []):
    cells = [f"{k} {v['s_median']:.3f}s {v.get('peak_mb')}MB" for k, v in row.items() if isinstance(v, dict) and "s_median" in v]
    print(f"quantize {row['scheme']}: " + ("; ".join(cells) or row.get("error", "no rows")))
for s in "abc":
    f = load(out / f"finetune-{s}" / "finetune_cuda.json")
    for r in (f or {}).get("arch_1b_cuda", []):
        print(f"finetune {s} ckpt={r['gradient_checkpointing']}: step {r['step_s']:.3f}s peak {r['gpu_peak_mb']}MB "
              f"trainable {r.get('trainable')}")
sc = load(out / "scale.json")
for r in (sc or {}).get("rows", []):
    print(f"scale {r['name']}: " + (str(r["error"]) if "error" in r else
          f"forward {r['forward_s']}s peak {r.get('gpu_peak_mb')}MB estimate {r.get('estimate_mb')}MB"))
v = load(out / "train_vln.json")
if v:
    print(f"train-vln tiny cuda: live {v['live']['median_s']['step_time']:.3f}s/it "
          f"cached {v['cached']['median_s']['step_time']:.3f}s/it")
for size in ("3b", "7b"):
    v = load(out / f"train_vln_{size}.json")
    if v:
        live = v["live"]
        print(f"train-vln {size} cuda: {live['median_s']['step_time']:.2f}s per step of {live['samples_per_step']} "
              f"samples (vggt {live['median_s']['vggt_time']:.2f}s, fwd+bwd {live['median_s']['fwd_bwd_time']:.2f}s, "
              f"optim {live['median_s']['optim_time']:.2f}s) peak {live.get('gpu_peak_mb')}MB")
EOF
echo "total: $((SECONDS - START))s of ${BUDGET}s" | tee -a "$SUMMARY"
ls -l "$OUT"
