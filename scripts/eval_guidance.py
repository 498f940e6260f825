#!/usr/bin/env python
"""Evaluate a guidance model: retrieval and binding on fresh synthetic renders (training-style
captions and paraphrase templates never used in training), and the colour-optimisation check.

    .venv/bin/python scripts/eval_guidance.py [--checkpoint avatar/guidance/weights/mini.pt] [--steps 300]

Retrieval: top-1 in groups of 32. Binding: the caption beats the same caption with two
garments' colours swapped. Colour check: a grey body's low-frequency colour field optimised
for each prompt; the mean RGB of its torso and legs is printed (full Anny mesh).
"""

from __future__ import annotations

import argparse
import random

import torch

from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
from avatar.guidance import build_guidance
from avatar.guidance.evaluation import optimise_body_colours, retrieval_and_binding
from avatar.guidance.mini import MINI_CHECKPOINT, MiniGuidanceConfig
from avatar.guidance.synthetic.captions import caption, swap_negative
from avatar.guidance.synthetic.generator import SyntheticConfig, SyntheticRenderer

PROMPTS = (
    "a person in a red shirt and blue trousers",
    "a person in a yellow shirt and purple trousers",
    "a person in a crimson shirt and navy trousers",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=MINI_CHECKPOINT)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    guidance = build_guidance(MiniGuidanceConfig(checkpoint=args.checkpoint))
    synthetic = SyntheticRenderer(SyntheticConfig())
    data = synthetic.generate(args.samples, torch.Generator().manual_seed(args.seed))
    rng = random.Random(args.seed)
    print("| captions | text->image top-1 | image->text top-1 | binding accuracy (pairs) |\n|---|---|---|---|")
    for name, held_out in (("training templates, unseen renders", False), ("paraphrases never trained on", True)):
        caps, plans = zip(*(caption(a, rng, held_out=held_out) for a in data.attributes))
        swapped = [swap_negative(p, a, rng) for p, a in zip(plans, data.attributes)]
        m = retrieval_and_binding(guidance, data.images, list(caps), swapped)
        print(f"| {name} | {m['text_to_image_top1']:.3f} | {m['image_to_text_top1']:.3f} | "
              f"{m['binding_accuracy']:.3f} ({m['binding_pairs']}) |")  # fmt: skip
    body = AnnyBody(AnnyBodyConfig())
    print("\n| prompt | torso RGB | legs RGB |\n|---|---|---|")
    for prompt in PROMPTS:
        fit = optimise_body_colours(guidance, body, prompt, steps=args.steps)
        torso, legs = fit.region_means["torso"], fit.region_means["legs"]
        print(f"| {prompt} | {', '.join(f'{c:.2f}' for c in torso)} | {', '.join(f'{c:.2f}' for c in legs)} |")


if __name__ == "__main__":
    main()
