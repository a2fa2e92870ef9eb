#!/usr/bin/env bash
# `make demo`: every workflow that works today, end to end, on the seeded tiny VGGT (generated locally,
# never downloaded) and a generated synthetic ETH3D-layout scene. Each step's output is shown.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/vggtctl
OUT=${DEMO_OUT:-demo_out}
rm -rf "$OUT"
mkdir -p "$OUT"
export VGGTCTL_HOME="$(cd "$OUT" && pwd)/home"  # OUT may be relative or absolute

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "Environment" $V env
step "The seeded tiny VGGT checkpoint (generated locally)" \
  $V download weights --preset tiny --local-dir "$OUT/weights"
MODEL="$OUT/weights/model.safetensors"
step "A synthetic ETH3D scene with exact ground truth" \
  $V download eth3d --synthetic --out "$OUT/eth3d" --scenes 1 --views 6 --seed 0
step "Inference: cameras, depth, point cloud, COLMAP model" \
  $V infer "$OUT/eth3d/synth_000/images/dslr_images_undistorted" --model "$MODEL" --out "$OUT/infer" --format npz,ply,colmap
ls -l "$OUT/infer" "$OUT/infer/colmap"
step "The memory plan for VGGT-1B on this scene (nothing is downloaded or run)" \
  $V infer "$OUT/eth3d/synth_000/images/dslr_images_undistorted" --dtype fp32 --device cpu --max-memory 7GB --dry-run
step "Long sequences: overlapping chunks aligned by Sim(3) into frame 0's world" \
  $V infer "$OUT/eth3d/synth_000/images/dslr_images_undistorted" --model "$MODEL" --dtype fp32 \
  --chunk-size 4 --overlap 2 --out "$OUT/infer_chunked" --format npz
step "Original-resolution depth and intrinsics, COLMAP bundle adjustment on track-head observations" \
  $V infer "$OUT/eth3d/synth_000/images/dslr_images_undistorted" --model "$MODEL" --out "$OUT/infer_ba" \
  --mode pad --resolution original --bundle-adjust --ba-queries 64 --format npz,colmap
step "Bundle adjustment of an existing COLMAP model (kept only if the error goes down)" \
  $V colmap refine "$OUT/infer/colmap" --out "$OUT/colmap_refined"
step "Bundle adjustment recovering exact cameras on a synthetic scene" \
  env PYTHONPATH=. .venv/bin/python examples/bundle_adjust_synthetic.py "$OUT/ba_synthetic"
step "Evaluation against the synthetic ground truth" \
  $V evaluate --data "$OUT/eth3d" --model "$MODEL" --out "$OUT/report.json"
step "Evaluation of the saved predictions (no model run)" \
  $V evaluate --data "$OUT/eth3d" --scenes synth_000 --predictions "$OUT/infer" --json
step "A stand-in reconstruction (the scans + 1 cm noise) to score like any method's cloud" \
  .venv/bin/python examples/noisy_scan_cloud.py "$OUT/eth3d" synth_000 "$OUT/noisy.ply"
step "ETH3D's official point-cloud protocol on that cloud (only dslr_scan_eval/ is read)" \
  $V evaluate --data "$OUT/eth3d" --scenes synth_000 --reconstruction "$OUT/noisy.ply" --pc-align none
step "Quantize to int8 (dynamic W8A8) with a float-vs-int8 report" \
  $V quantize --model "$MODEL" --out "$OUT/int8" --quantize-heads --compare-frames 2 --repeats 1 --device cpu
step "Inference with the int8 artifact as --model" \
  $V infer "$OUT/eth3d/synth_000/images/dslr_images_undistorted" --model "$OUT/int8" --out "$OUT/infer_int8" --format npz
step "Monitor a training log" $V monitor examples/logs/hf_trainer.log
step "Fine-tune the tiny model with LoRA for a few steps (strategy a, CPU)" \
  $V finetune --config tiny-smoke --data "$OUT/eth3d" --output-dir "$OUT/finetune" --max-steps 3 data.image_size=56 run.val_every=0
step "Monitor the fine-tuning run directory" $V monitor "$OUT/finetune"
step "Merge the adapter into VGGT-1B-layout weights" $V finetune merge "$OUT/finetune" --out "$OUT/finetuned"
step "The run as one HTML page (vggtctl view without a server; open it in a browser)" \
  $V view "$OUT/infer" --snapshot "$OUT/infer_view.html"
printf 'Interactive: vggtctl view %s/infer   |   web page: vggtctl app --model tiny\n' "$OUT"
printf '\nDemo finished. Outputs are in %s/\n' "$OUT"
