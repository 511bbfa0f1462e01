#!/usr/bin/env bash
# The seed's experiment protocol (docs/results.md), trained part: fine-tunes of the two shipped demo models,
# all with the same recipe and budget, in two lanes side by side (one thread each; a 2-core machine).
#
#   scripts/seed_protocol.sh [STEPS] [RUNS_DIR]      (default 250 steps a run, runs/protocol)
#
# Lane A: Phase 2 at lambda 0.0018 and 0.0067, the per-scale ablations (s3 only, s2+s3), a second seed.
# Lane B: Base at lambda 0.0018 and 0.0067, Phase 2 "all" (the ablations' reference) and transfer off.
# Every run starts from the shipped weights of its model and resumes where it stopped; a finished run is skipped.
set -euo pipefail
STEPS=${1:-250}
RUNS=${2:-runs/protocol}
mkdir -p "$RUNS"
COMMON=(--steps "$STEPS" --lr-drop-at 0.9 --threads 1)

run() {  # run NAME PRESET LAMBDA SEED [--set ...]
  local name=$1 preset=$2 lmbda=$3 seed=$4; shift 4
  local init=demo-${preset#tiny-}
  if [[ -f "$RUNS/$name/model.pt" ]]; then echo "$name: done"; return; fi
  echo "$name: training ($(date +%T))"
  hpcm-deploy train --preset "$preset" --init "$init" --lambda "$lmbda" --seed "$seed" "${COMMON[@]}" \
    --out "$RUNS/$name" "$@" > "$RUNS/$name.out" 2>&1
  echo "$name: finished ($(date +%T))"
}

lane_a() {
  run p2-l0.0018 tiny-phase2 0.0018 11
  run p2-l0.0067 tiny-phase2 0.0067 11
  run p2-s3-only tiny-phase2 0.0035 11 --set max_refs_s1=0 --set max_refs_s2=0
  run p2-s2-s3 tiny-phase2 0.0035 11 --set max_refs_s1=0
  run p2-l0.0018-seed12 tiny-phase2 0.0018 12
}
lane_b() {
  run base-l0.0018 tiny-base 0.0018 11
  run base-l0.0067 tiny-base 0.0067 11
  run p2-all tiny-phase2 0.0035 11
  run p2-no-transfer tiny-phase2 0.0035 11 --set enable_hierarchical_transfer=false
}
lane_a > "$RUNS/lane_a.log" 2>&1 &
lane_b > "$RUNS/lane_b.log" 2>&1 &
wait
echo "all runs finished: $RUNS"
