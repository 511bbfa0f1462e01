#!/usr/bin/env bash
# The seed's experiment protocol (docs/results.md), trained part: fine-tunes of the two shipped demo models in
# two lanes side by side (one thread each; a 2-core machine). Same recipe everywhere (Adam 5e-4, lr/5 for the
# last 10 %, batch 8, 256 crops); the same budget for Phase 2 and Base at each lambda, and for every ablation.
#
#   scripts/seed_protocol.sh [RD_STEPS] [ABLATION_STEPS] [RUNS_DIR]     (default 300, 150, runs/protocol)
#
# Lane A: Phase 2 at lambda 0.0018 and 0.0067, the per-scale ablations (s3 only, s2+s3).
# Lane B: Base at lambda 0.0018 and 0.0067, Phase 2 "all" (the ablations' reference, at the shipped lambda),
#         transfer off, and "all" again with another seed (the seed-to-seed noise the ablations are read against).
# Every run starts from the shipped weights of its model and resumes where it stopped; a finished run is skipped.
set -euo pipefail
RD=${1:-300}
AB=${2:-150}
RUNS=${3:-runs/protocol}
mkdir -p "$RUNS"

run() {  # run NAME PRESET LAMBDA SEED STEPS [--set ...]
  local name=$1 preset=$2 lmbda=$3 seed=$4 steps=$5; shift 5
  if [[ -f "$RUNS/$name/model.pt" ]]; then echo "$name: done"; return; fi
  echo "$name: training ($(date +%T))"
  hpcm-deploy train --preset "$preset" --init "demo-${preset#tiny-}" --lambda "$lmbda" --seed "$seed" \
    --steps "$steps" --lr-drop-at 0.9 --threads 1 --out "$RUNS/$name" "$@" > "$RUNS/$name.out" 2>&1
  echo "$name: finished ($(date +%T))"
}

lane_a() {
  run p2-l0.0018 tiny-phase2 0.0018 11 "$RD"
  run p2-l0.0067 tiny-phase2 0.0067 11 "$RD"
  run p2-s3-only tiny-phase2 0.0035 11 "$AB" --set max_refs_s1=0 --set max_refs_s2=0
  run p2-s2-s3 tiny-phase2 0.0035 11 "$AB" --set max_refs_s1=0
}
lane_b() {
  run base-l0.0018 tiny-base 0.0018 11 "$RD"
  run base-l0.0067 tiny-base 0.0067 11 "$RD"
  run p2-all tiny-phase2 0.0035 11 "$AB"
  run p2-no-transfer tiny-phase2 0.0035 11 "$AB" --set enable_hierarchical_transfer=false
  run p2-all-seed12 tiny-phase2 0.0035 12 "$AB"
}
if [[ -n "${WAIT_FOR:-}" ]]; then  # hand-over from an earlier invocation: let its runs finish first
  for pid in $WAIT_FOR; do while kill -0 "$pid" 2>/dev/null; do sleep 10; done; done
fi
lane_a >> "$RUNS/lane_a.log" 2>&1 &
lane_b >> "$RUNS/lane_b.log" 2>&1 &
wait
echo "all runs finished: $RUNS"
