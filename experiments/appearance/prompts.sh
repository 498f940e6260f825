#!/usr/bin/env bash
# Appearance prompts beyond the default (issue 27 item 3): other garments, colours, a pattern, a
# short-sleeved top, shorts, a skirt, all in the offline model's vocabulary, through the stage at
# preset=tiny on the full Anny body; then a contact sheet (front, side, back) of the exported
# avatars (experiments/appearance/contact_sheet.py) and their `avatar-eval appearance` figures.
# Results: docs/experiments/appearance.md.
#   bash experiments/appearance/prompts.sh [out_dir] [steps] ["prompt indices ..."] [overrides ...]
set -euo pipefail
OUT=${1:-outputs/appearance_prompts}
STEPS=${2:-400}
PROMPTS=(
  "a person in a red shirt and blue trousers"
  "a person in a green shirt and white trousers"
  "a person in a yellow t-shirt and black shorts"
  "a woman in a pink top and a navy skirt"
  "a person in a striped orange sweater and grey jeans"
  "a person in a purple tank top and khaki shorts"
)
IDS=${3:-${!PROMPTS[*]}}
shift $(($# < 3 ? $# : 3))
PY=${PYTHON:-.venv/bin/python}
RUNS=()
for i in $IDS; do
  dir="$OUT/p${i}_steps${STEPS}"
  RUNS+=("$dir")
  [ -f "$dir/result.json" ] && continue
  rm -rf "$dir"
  "$PY" train.py stage=appearance preset=tiny "prompt.appearance=${PROMPTS[$i]}" trainer.max_steps="$STEPS" \
    trainer.enable_progress_bar=false logger=csv hydra.run.dir="$dir" "$@"
done
"$PY" experiments/appearance/contact_sheet.py "${RUNS[@]}" --out "$OUT/contact_sheet.png"
"$(dirname "$PY")/avatar-eval" appearance "${RUNS[@]}" > "$OUT/avatar_eval.txt"
cat "$OUT/avatar_eval.txt"
