#!/usr/bin/env bash
# The seed's ablations as one recipe: train each variant of tiny-phase2 with the same recipe and seed, export
# it, and evaluate all of them on the held-out images (RD table, per-scale bits).
#
#   scripts/ablations.sh [STEPS] [LAMBDA]      (default 8000 steps, lambda 0.0035; hours of CPU per variant)
#
# Variants: per scale (s3 only, s2+s3, all), value resolution 4/8/16, hierarchical transfer off/on, and
# Phase 2 against HPCM-Base (tiny-base). Runs resume where they stopped.
set -euo pipefail
STEPS=${1:-8000}
LAMBDA=${2:-0.0035}
declare -A VARIANTS=(
  [base]="--preset tiny-base"
  [all]="--preset tiny-phase2"
  [s3-only]="--preset tiny-phase2 --set max_refs_s1=0 --set max_refs_s2=0"
  [s2-s3]="--preset tiny-phase2 --set max_refs_s1=0"
  [vres4]="--preset tiny-phase2 --set value_resolution=4"
  [vres16]="--preset tiny-phase2 --set value_resolution=16"
  [no-transfer]="--preset tiny-phase2 --set enable_hierarchical_transfer=false"
)
args=()
for name in "${!VARIANTS[@]}"; do
  # shellcheck disable=SC2086
  hpcm-deploy train ${VARIANTS[$name]} --lambda "$LAMBDA" --steps "$STEPS" --out "runs/ablation-$name"
  hpcm-deploy export --checkpoint "runs/ablation-$name/model.pt" --out "export/ablation-$name" --no-check
  args+=(--export "export/ablation-$name" --label "$name")
done
hpcm-deploy eval --heldout --jpeg "${args[@]}" --json > runs/ablations.json
hpcm-deploy eval --heldout "${args[@]}"
