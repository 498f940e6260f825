#!/usr/bin/env bash
# The recipe of the default guidance weights, avatar/guidance/weights/mini.pt, from scratch:
#
#     bash scripts/train_mini.sh <output dir> [extra overrides for every run]
#
# 1. base: 1,700 steps from scratch (avatar/guidance/weights/mini_base.pt was this run; ~75 min
#    on a 2-core CPU).
# 2. four 300-step binding fine-tunes, each from the last, all anchored to the base so that what
#    the pose, shape and motion stages read from the model stays where it was (README, "the
#    offline guidance model"); each chunk another seed, so it renders new batches. ~40 min each
#    on the same CPU.
# The result is <output dir>/chunk4/mini.pt. Check it before copying it over the shipped weights:
#     .venv/bin/python scripts/eval_guidance.py --checkpoint <output dir>/chunk4/mini.pt --samples 2048 --steps 0
# The shipped files were trained with this recipe at earlier revisions of the synthetic data
# (each checkpoint's meta records its git revision), so a rerun is the same recipe, not the
# same bytes. The base saw every outfit combination (combinations=all, as the shipped one did).
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: bash scripts/train_mini.sh <output dir> [extra overrides for every run]" >&2
    exit 2
fi
out=$(realpath -m "$1")
shift
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}

$py train.py stage=train_guidance trainer.max_steps=1700 stage.combinations=all logger=csv \
    run_dir="$out/base" "$@"

fine_tune=(stage.lr=1e-4 stage.text_lr=5e-5 stage.warmup_steps=20 stage.lambda_binding=3
    stage.lambda_change=1 stage.lambda_anchor=2 stage.lambda_anchor_image=1 trainer.max_steps=300
    logger=csv "stage.anchor_weights=$out/base/mini.pt")
previous="$out/base"
for chunk in 1 2 3 4; do
    swaps=one
    [[ $chunk -ge 3 ]] && swaps=all  # chunks 3 and 4 of the shipped lineage; it measured the same as one
    $py train.py stage=train_guidance "${fine_tune[@]}" seed=$((chunk - 1)) stage.binding_swaps=$swaps \
        "stage.init_weights=$previous/mini.pt" run_dir="$out/chunk$chunk" "$@"
    previous="$out/chunk$chunk"
done
echo "trained: $out/chunk4/mini.pt"
