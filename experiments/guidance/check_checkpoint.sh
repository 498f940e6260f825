#!/usr/bin/env bash
# Every check a mini checkpoint must pass before it replaces avatar/guidance/weights/mini.pt
# (README "Current results"; a candidate ships when no stage gets worse, docs/models/mini.md):
# the shape map fitted for it, the guidance table, the colour check, the pose search, the held-out paraphrase set (pose, shape,
# colour), the appearance stage on six prompts and the motion stage. Run it for the shipped
# checkpoint too on the same machine to compare. Its parts took ~50 min together on a 2-core CPU
# (two jobs at a time); a failed check stops the script.
#   bash experiments/guidance/check_checkpoint.sh <mini.pt> <out dir>
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: bash experiments/guidance/check_checkpoint.sh <mini.pt> <out dir>" >&2
    exit 2
fi
ckpt=$(realpath "$1")
out=$(realpath -m "$2")
cd "$(dirname "$0")/../.."
mkdir -p "$out"
python=${PYTHON:-.venv/bin/python}
eval_="$(dirname "$python")/avatar-eval"
export OMP_NUM_THREADS=1
pids=()
wait_all() {  # a plain `wait` returns 0 even when a job failed (or was OOM-killed)
    for pid in "${pids[@]}"; do wait "$pid"; done
    pids=()
}

# The shape stage reads the prompt through a map fitted for its guidance weights, found beside them
# (stage.text_map=auto): fit the candidate's, as the shipped mini_shape_map.pt was fitted for mini.pt.
"$python" experiments/guidance/shape_direction_adapter.py "guidance.checkpoint=$ckpt" \
    --out "${ckpt%.pt}_shape_map.pt" > "$out/shape_map.txt" 2>&1
# Alone: 2,048 samples peak at ~20 GB.
"$eval_" guidance --checkpoint "$ckpt" --steps 0 --samples 2048 > "$out/guidance_table.txt" 2>&1
"$eval_" pose "guidance.checkpoint=$ckpt" > "$out/pose.txt" 2>&1 &
pids+=($!)
"$eval_" paraphrase --kinds pose,shape "guidance.checkpoint=$ckpt" > "$out/paraphrase_pose_shape.txt" 2>&1 &
pids+=($!)
wait_all
"$eval_" guidance --checkpoint "$ckpt" --samples 32 --steps 200 --color-seeds 5 --figure "$out/colour_check.png" \
    > "$out/colour_check.txt" 2>&1 &
pids+=($!)
"$eval_" paraphrase --kinds color "guidance.checkpoint=$ckpt" > "$out/paraphrase_colour.txt" 2>&1 &
pids+=($!)
wait_all
for ids in "0 1 2" "3 4 5"; do
    bash experiments/appearance/prompts.sh "$out/appearance" 200 "$ids" "guidance.checkpoint=$ckpt" > "$out/appearance_${ids// /}.log" 2>&1 &
    pids+=($!)
done
wait_all
# All six trained above (it skips runs with a result.json): the contact sheet and one table.
bash experiments/appearance/prompts.sh "$out/appearance" 200 "0 1 2 3 4 5" "guidance.checkpoint=$ckpt" > /dev/null 2>&1
"$eval_" motion body.topology=notoes_collapse5pc "guidance.checkpoint=$ckpt" > "$out/motion.txt" 2>&1
tail -n 4 "$out"/*.txt "$out/appearance/avatar_eval.txt"
# Once copied over avatar/guidance/weights/mini.pt, the suite's own colour check (low-poly, 3 seeds,
# torso red by 0.3 on every seed) must still pass (copy its shape map too, as mini_shape_map.pt):
#     .venv/bin/python -m pytest tests/test_guidance_mini.py -k shipped
