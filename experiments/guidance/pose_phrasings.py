"""How well the mini model's pose search follows each grammar phrasing of a pose word: for every
phrasing of the eight words of ``avatar-eval pose`` (avatar/guidance/synthetic/captions.py
POSE_PHRASES), "a person <phrasing>" through the pose search as ``avatar-eval pose`` judges it
(hit rate of the five candidates, ROC-AUC over the codebook). Grammar prompts only, no held-out
paraphrase: the question behind the snapped reading's choice to write a pose word in its first
phrasing (avatar/guidance/snapping.py; docs/experiments/guidance-model.md, 2026-12-05).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/guidance/pose_phrasings.py [pose-stage overrides]
"""

from __future__ import annotations

import sys

from avatar.evaluation import pose_search
from avatar.guidance.synthetic.captions import POSE_PHRASES


def main() -> None:
    prompts = {}
    for group, word in pose_search.PROMPTS.values():
        for phrase in POSE_PHRASES[word]:
            prompts[f"a person {phrase}"] = (group, word)
    rows = pose_search.evaluate(sys.argv[1:], prompts, table=False)["prompts"]
    print("| pose word | prompt | hits | AUC |\n|---|---|---|---|")
    for prompt, (_, word) in prompts.items():
        print(f"| {word} | {prompt} | {rows[prompt]['hit_rate']:.1f} | {rows[prompt]['auc']:.3f} |")


if __name__ == "__main__":
    main()
