#!/usr/bin/env bash
# The one command that remakes the default guidance weights, avatar/guidance/weights/mini.pt,
# from committed inputs (the code and its synthetic renders): docs/models/mini.md.
#
#     bash experiments/guidance/train_mini.sh <output dir> [extra overrides for every run]
#
# 1. base: 1,700 steps from scratch on every outfit combination (~75 min on a 2-core CPU);
# 2. D2: four 300-step binding fine-tunes, each from the last, all anchored to the base so that
#    what the pose, shape and motion stages read from the model stays where it was; each chunk
#    another seed, so it renders new batches (~40 min each on the same CPU);
# 3. the shipped mix: WiSE-FT of D2 with the base, text tower halfway, image tower D2's.
# The result is <output dir>/mini.pt. Check it before copying it over the shipped weights:
#     avatar-eval guidance --checkpoint <output dir>/mini.pt --samples 2048 --steps 0
# The shipped file was made with this recipe at earlier revisions of the synthetic data (each
# checkpoint's meta records its git revision): a rerun is the same recipe, not the same bytes.
# BASE_STEPS / CHUNK_STEPS shorten the runs (a smoke test of the recipe).
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: bash experiments/guidance/train_mini.sh <output dir> [extra overrides for every run]" >&2
    exit 2
fi
out=$(realpath -m "$1")
shift
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
base_steps=${BASE_STEPS:-1700}
chunk_steps=${CHUNK_STEPS:-300}

$py train.py stage=train_guidance trainer.max_steps="$base_steps" stage.combinations=all logger=csv \
    hydra.run.dir="$out/base" "$@"

fine_tune=(stage.lr=1e-4 stage.text_lr=5e-5 stage.warmup_steps=20 stage.lambda_binding=3
    stage.lambda_change=1 stage.lambda_anchor=2 stage.lambda_anchor_image=1 trainer.max_steps="$chunk_steps"
    logger=csv "stage.anchor_weights=$out/base/mini.pt")
previous="$out/base"
for chunk in 1 2 3 4; do
    swaps=one
    [[ $chunk -ge 3 ]] && swaps=all  # chunks 3 and 4 of the shipped lineage
    $py train.py stage=train_guidance "${fine_tune[@]}" seed=$((chunk - 1)) stage.binding_swaps=$swaps \
        "stage.init_weights=$previous/mini.pt" hydra.run.dir="$out/chunk$chunk" "$@"
    previous="$out/chunk$chunk"
done
$py -m avatar.guidance.interpolate --base "$out/base/mini.pt" --finetuned "$out/chunk4/mini.pt" \
    --alpha-text 0.5 --alpha-image 1 --out "$out/mini.pt"
echo "trained: $out/mini.pt (copy it to avatar/guidance/weights/mini.pt once avatar-eval guidance agrees)"
