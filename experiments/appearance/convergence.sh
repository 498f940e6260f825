#!/usr/bin/env bash
# How many guided steps the appearance stage needs (issue 29's convergence study): the stage at
# preset=tiny on the full Anny body, for three prompts, at several step budgets (each a separate
# run, so each gets its own warm-up + cosine schedule), then the report
# (experiments/appearance/convergence_report.py): the independent scorer's loss and the region
# colours against steps. Results: docs/experiments/performance.md and appearance.md.
#   bash experiments/appearance/convergence.sh [out_dir] ["steps ..."] ["prompt indices ..."]
set -euo pipefail
OUT=${1:-outputs/appearance_convergence}
STEPS=${2:-150 250 400}
PROMPTS=(
  "a person in a red shirt and blue trousers"
  "a person in a green shirt and white trousers"
  "a person in a yellow shirt and black trousers"
)
PY=${PYTHON:-.venv/bin/python}
IDS=${3:-${!PROMPTS[*]}}
for i in $IDS; do
  for steps in $STEPS; do
    dir="$OUT/p${i}_steps${steps}"
    [ -f "$dir/result.json" ] && continue
    rm -rf "$dir"
    "$PY" train.py stage=appearance preset=tiny "prompt.appearance=${PROMPTS[$i]}" \
      trainer.max_steps="$steps" trainer.enable_progress_bar=false logger=csv hydra.run.dir="$dir"
  done
done
"$PY" experiments/appearance/convergence_report.py "$OUT"
