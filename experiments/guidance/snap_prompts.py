"""What ``guidance.text_reading=snapped`` makes of prompts (avatar/guidance/snapping.py): each
prompt, what the mini model reads instead, and, for the held-out paraphrases, whether the snap
names the entry's pose word / the garments' colours, as a quick text-side reading before the
geometric checks (``avatar-eval paraphrase guidance.text_reading=snapped``).

    .venv/bin/python experiments/guidance/snap_prompts.py                 # the dev sentences below
    .venv/bin/python experiments/guidance/snap_prompts.py --paraphrases   # + the held-out set

The dev sentences were written for the method (and its tests), not taken from the held-out set;
the held-out set is only printed, never used to choose anything one sentence at a time
(docs/experiments/guidance-model.md, 2026-12-05).
"""

from __future__ import annotations

import argparse
import time

from avatar.evaluation.paraphrase import load_paraphrases
from avatar.guidance.snapping import snap_prompt
from avatar.guidance.synthetic.captions import named_pose_words
from avatar.metrics.appearance import prompt_colors

DEV = {
    "pose": {
        "a guy throwing both hands in the air": "arms raised",
        "somebody with hands held over the head": "arms raised",
        "a lady raising her left hand": "one arm raised",
        "a kid putting one arm up": "one arm raised",
        "a man with his arms held out sideways": "arms spread",
        "a woman doing squats": "squatting",
        "a boy down on his haunches": "squatting",
        "someone resting on a bench": "sitting",
        "a footballer kicking the ball": "kicking",
        "a woman jogging through the park": "walking",
        "a person picking something up from the floor": "bending forward",
        "a man bent over at the hips": "bending forward",
    },
    "shape": {
        "a plump woman": "heavy",
        "a scrawny man": "slim",
        "a toddler": "child",
        "an aged man": "old man",
        "a grandmother": "old woman",
        "a gentleman": "man",
        "a gigantic man": "tall",
        "a very short lady": "short",
    },  # fmt: skip
    "color": [
        "a lady in a green coat and white slacks",
        "somebody whose jacket is black and whose jeans are grey",
        "a blue hoodie with orange shorts",
        "a chap wearing a hunter green raincoat, kicking a ball",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paraphrases", action="store_true", help="also print the held-out paraphrase set's snaps")
    args = parser.parse_args()
    start = time.perf_counter()
    print("| kind | prompt | read as | expected | named |\n|---|---|---|---|---|")
    for prompt, word in DEV["pose"].items():
        snapped = snap_prompt(prompt).snapped
        print(f"| dev pose | {prompt} | {snapped} | {word} | {'yes' if word in named_pose_words(snapped) else 'no'} |")
    for prompt, word in DEV["shape"].items():
        snapped = snap_prompt(prompt).snapped
        print(f"| dev shape | {prompt} | {snapped} | {word} | {'yes' if f' {word} ' in f' {snapped} ' else 'no'} |")
    for prompt in DEV["color"]:
        snapped = snap_prompt(prompt).snapped
        kept = list(prompt_colors(snapped)) == list(prompt_colors(prompt))
        print(f"| dev colour | {prompt} | {snapped} | colours kept | {'yes' if kept else 'no'} |")
    if args.paraphrases:
        data = load_paraphrases()
        counts = {"pose": 0, "color": 0}
        for entry in data["pose"]:
            snapped = snap_prompt(entry["prompt"]).snapped
            named = entry["word"] in named_pose_words(snapped)
            counts["pose"] += named
            print(f"| pose | {entry['prompt']} | {snapped} | {entry['word']} | {'yes' if named else 'no'} |")
        for entry in data["shape"]:
            snapped = snap_prompt(entry["prompt"]).snapped
            moves = ", ".join(f"{k} {v}" for k, v in entry["moves"].items())
            print(f"| shape | {entry['prompt']} | {snapped} | {moves} | - |")
        for entry in data["color"]:
            snapped = snap_prompt(entry["prompt"]).snapped
            kept = list(prompt_colors(snapped)) == list(prompt_colors(entry["prompt"]))
            counts["color"] += kept
            regions = ", ".join(f"{k} {v}" for k, v in entry["regions"].items())
            print(f"| color | {entry['prompt']} | {snapped} | {regions} | colours kept: {'yes' if kept else 'no'} |")
        print(f"\npose paraphrases whose snap names their pose word: {counts['pose']}/{len(data['pose'])}; "
              f"colour paraphrases whose colours are kept: {counts['color']}/{len(data['color'])}")  # fmt: skip
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
