"""Evaluate a guidance model: retrieval and binding on fresh synthetic renders (training-style
captions, paraphrase templates never used in training, and held-out attribute combinations),
and the colour-optimisation check.

    avatar-eval guidance [--checkpoint avatar/guidance/weights/mini.pt] [--steps 200] [--color-seeds 10]
    avatar-eval guidance --samples 256 --steps 0   # retrieval only (no colour check)

Retrieval: top-1 in groups of 32. Binding: the caption beats the same caption with two
garments' colours swapped. Pose: the caption beats the same caption with one pose word changed
("walking" -> "kicking"; over captions that mention a pose). Rows: renders of training combinations (``combinations=train``)
captioned with the training templates, the same renders with the held-out paraphrases, and
renders of held-out attribute combinations only (``combinations=held_out``: a green top with a
red bottom, checked sleeveless tops, ... see avatar/guidance/synthetic/holdout.py) captioned
with the training templates. A model trained with ``combinations=all`` (the shipped weights
predate the split) has seen those combinations: its third row is an upper bound, not a
generalisation measurement; the command says which one applies (checkpoint metadata). The
third row is not directly comparable to the first (no textureless renders; groups of 32 drawn
from five held-out combinations look alike; captions name each garment with probability 2/3 and
face views only the top, so about a third of the colour-pair renders have a caption naming both
colours): compare it between a model trained with ``combinations=train`` and one with ``all``.
A second table splits binding by the two swapped garments, in the order the caption names them.
Colour check: a grey body's low-frequency colour field optimised for each prompt from
``--color-seeds`` seeds (views, backgrounds and crops differ); a run is right when the torso's
mean RGB is nearer the shirt colour than the trouser colour and the legs' the other way round
(full Anny mesh; ``--topology notoes_collapse5pc --color-views 4 --color-size 96 --steps 100
--color-seeds 3`` is the check of tests/test_guidance_mini.py); the count of right runs and the
median region colours are printed; ``--figure`` draws one fit per pair; ``--steps 0`` skips it.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch

from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
from avatar.export.media import image_grid, save_image, to_uint8
from avatar.guidance import build_guidance
from avatar.guidance.evaluation import color_check, retrieval_and_binding
from avatar.guidance.mini import MINI_CHECKPOINT, MiniGuidanceConfig
from avatar.guidance.synthetic.appearance import COLORS
from avatar.guidance.synthetic.captions import GARMENTS, caption, pose_negative, swap_pair, swapped_caption
from avatar.guidance.synthetic.generator import SyntheticConfig, SyntheticRenderer
from avatar.render import MeshRenderConfig, MeshRenderer
from avatar.render.cameras import framing_cameras

# Colour check: (shirt colour, trouser colour) -> "a person in a <shirt> shirt and <trousers> trousers"
COLOR_PAIRS = (("red", "blue"), ("yellow", "purple"), ("crimson", "navy"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=MINI_CHECKPOINT)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200, help="colour-check steps per prompt; 0 skips the check")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument(
        "--color-seeds", type=int, default=10, help="colour-check runs per prompt (views, backgrounds, crops differ)"
    )
    parser.add_argument("--color-pairs", default=",".join(f"{a}/{b}" for a, b in COLOR_PAIRS),
                        help="shirt/trousers colour names from the vocabulary, comma-separated")  # fmt: skip
    parser.add_argument(
        "--topology",
        default="anny",
        help="colour-check body topology: anny (full) or notoes_collapse5pc (the tests' low-poly body)",
    )
    parser.add_argument("--color-views", type=int, default=8, help="colour-check views per step")
    parser.add_argument("--color-size", type=int, default=128, help="colour-check render size (px)")
    parser.add_argument("--figure", default=None,
                        help="write the colour fits of seed 1 (of 0 with one seed) as a PNG: a row per pair, front/side/back")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """``avatar-eval guidance``."""
    color_pairs = [tuple(pair.split("/")) for pair in args.color_pairs.split(",")]
    unknown = [c for pair in color_pairs for c in pair if c not in COLORS]
    if any(len(pair) != 2 for pair in color_pairs) or unknown:
        raise SystemExit(
            f"--color-pairs={args.color_pairs!r}: give shirt/trousers pairs of vocabulary colours, e.g. red/blue,green/black (unknown: {unknown})"
        )
    guidance = build_guidance(MiniGuidanceConfig(checkpoint=args.checkpoint))
    trained_on = (
        torch.load(args.checkpoint, map_location="cpu", weights_only=True).get("meta", {}).get("combinations", "all")
    )
    synthetic = SyntheticRenderer(SyntheticConfig(combinations="train"))
    held_out = SyntheticRenderer(replace(synthetic.cfg, combinations="held_out"), body=synthetic.body)
    data = synthetic.generate(args.samples, torch.Generator().manual_seed(args.seed))
    unseen = held_out.generate(args.samples, torch.Generator().manual_seed(args.seed + 1))
    rng = random.Random(args.seed)
    print(
        "| captions | text->image top-1 | image->text top-1 | binding accuracy (pairs) | pose accuracy (pairs) |\n|---|---|---|---|---|"
    )
    rows = (
        ("training templates, unseen renders", data, False),
        ("paraphrases never trained on", data, True),
        ("held-out attribute combinations", unseen, False),
    )
    by_pair = {}  # row -> (garment named first, garment named second) -> binding verdicts
    for name, batch, paraphrase in rows:
        caps, plans = zip(*(caption(a, rng, held_out=paraphrase) for a in batch.attributes))
        swaps = [swap_pair(p, a, rng) for p, a in zip(plans, batch.attributes)]
        swapped = [pair and swapped_caption(p, a, *pair) for p, a, pair in zip(plans, batch.attributes, swaps)]
        posed = [pose_negative(p, a, rng) for p, a in zip(plans, batch.attributes)]
        m = retrieval_and_binding(guidance, batch.images, list(caps), swapped, pose_changed=posed)
        print(f"| {name} | {m['text_to_image_top1']:.3f} | {m['image_to_text_top1']:.3f} | "
              f"{m['binding_accuracy']:.3f} ({m['binding_pairs']}) | {m['pose_accuracy']:.3f} ({m['pose_pairs']}) |")  # fmt: skip
        by_pair[name] = defaultdict(list)
        for pair, win in zip([p for p in swaps if p], m["binding_wins"]):
            by_pair[name][pair].append(win)
    # Where binding fails: which garments were swapped, in the order the caption names them.
    columns = [(a, b) for a in GARMENTS for b in GARMENTS if a != b]
    print("\n| binding by swapped garments (caption order) | " + " | ".join(f"{a}, {b}" for a, b in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, verdicts in by_pair.items():
        cells = [f"{np.mean(verdicts[c]):.2f} ({len(verdicts[c])})" if verdicts[c] else "-" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if trained_on != "train":
        print(f"\nThis checkpoint was trained with combinations={trained_on}: it has seen the held-out "
              "combinations, so their row is an upper bound, not a generalisation measurement.")  # fmt: skip
    if args.steps <= 0:
        return
    body = AnnyBody(AnnyBodyConfig(topology=args.topology))
    print("\n| prompt | right (seeds) | median torso RGB | median legs RGB |\n|---|---|---|---|")
    figure_rows = []
    for top, bottom in color_pairs:
        check = color_check(guidance, body, top, bottom, seeds=args.color_seeds, steps=args.steps,
                             views=args.color_views, size=args.color_size)  # fmt: skip
        figure_rows.append(check.colors[min(1, len(check.colors) - 1)])
        torso, legs = (torch.tensor(rgb).median(0).values.tolist() for rgb in (check.torso, check.legs))
        print(f"| {check.prompt} | {sum(check.right)}/{len(check.right)} | "
              f"{', '.join(f'{c:.2f}' for c in torso)} | {', '.join(f'{c:.2f}' for c in legs)} |")  # fmt: skip
    if args.figure:
        save_image(args.figure, color_fit_figure(body, figure_rows))
        print(f"\nwrote {args.figure} (rows: {args.color_pairs}; front, side, back)")


def color_fit_figure(body: AnnyBody, fits: list[torch.Tensor], size: int = 192) -> np.ndarray:
    """Each fit's vertex colours on the rest-pose body from the front, the left side and the back."""
    vertices = body().vertices.detach()
    cams = framing_cameras(vertices, azimuths_deg=(0.0, 90.0, 180.0), margin=1.05)
    renderer = MeshRenderer(MeshRenderConfig(height=size, width=size, background="white"))
    tiles = []
    for colors in fits:
        with torch.no_grad():
            rgb = renderer.render(vertices[0], body.faces, cams, colors=colors).rgb
        tiles += [to_uint8(image) for image in rgb]
    return image_grid(tiles, ncols=3)
