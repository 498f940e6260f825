"""Which garment does an unfamiliar garment word snap to (issue #28)? The snapper
(avatar/guidance/snapping.py) sends a word it does not know to its nearest grammar garment in the
frozen MiniLM space, the word alone; on the held-out paraphrases that sent "jumper" to pants,
"chinos" to sweater, "joggers" to shoes and "bottom" to top. This compares ways of reading the word
on a dev list of garment words written for this script (none of the held-out set's garment words),
scored by the body region the snapped garment paints: top, legs, skirt or feet.

    .venv/bin/python experiments/guidance/garment_snap_probe.py
"""

from __future__ import annotations

import torch

from avatar.guidance.snapping import grammar
from avatar.priors.motion_descriptions import sentence_encoder

# Dev words (2026-12-06), none in avatar/evaluation/paraphrases.yaml, with the region they cover.
DEV = {
    "top": "pullover sweatshirt jersey tunic turtleneck camisole henley fleece parka anorak windbreaker "
    "blazer overcoat raincoat poncho waistcoat singlet shawl smock",
    "legs": "khakis breeches capris culottes dungarees overalls bermudas trunks pantaloons flares denims tights "
    "jodhpurs sweats bloomers trackpants",
    "feet": "trainers loafers sandals heels pumps slippers moccasins brogues clogs wellies stilettos oxfords",
}
REGION = {
    **dict.fromkeys(("shirt", "top", "sweater", "long-sleeved shirt", "t-shirt", "short-sleeved shirt", "tank top",
                     "sleeveless top"), "top"),
    **dict.fromkeys(("trousers", "pants", "jeans", "shorts"), "legs"),
    "skirt": "skirt",
    **dict.fromkeys(("shoes", "sneakers", "boots"), "feet"),
}  # fmt: skip
# Region descriptions: the word (in a template) against the mean embedding of each region's text.
DESCRIPTIONS = {
    "plain": {"top": ["a garment worn on the upper body", "clothing for the torso and arms"],
              "legs": ["a garment worn on the legs", "clothing for the legs and hips"],
              "feet": ["footwear worn on the feet", "shoes for the feet"]},
    "examples": {"top": ["a shirt, sweater, jacket or coat"], "legs": ["trousers, pants, jeans or shorts"],
                 "feet": ["shoes, boots or sneakers"]},
}  # fmt: skip
CONTEXTS = {
    "word alone (today)": "{}",
    "a red {}": "a red {}",
    "a person wearing a red {}": "a person wearing a red {}",
    "someone dressed in {}": "someone dressed in {}",
}


def main() -> None:
    g = grammar()
    enc = sentence_encoder()
    words = [(w, region) for region, text in DEV.items() for w in text.split()]
    for label, ctx in CONTEXTS.items():
        gar = enc.encode([ctx.format(x) for x in g.garments])
        vec = enc.encode([ctx.format(w) for w, _ in words])
        sims = vec @ gar.T
        # nearest garment name
        near = [g.garments[int(i)] for i in sims.argmax(-1)]
        right = sum(REGION[n] == r for n, (_, r) in zip(near, words))
        # nearest region by mean similarity to its garments (prototype)
        regions = sorted(set(REGION.values()))
        proto = torch.stack([sims[:, [REGION[x] == r for x in g.garments]].mean(-1) for r in regions], -1)
        right_proto = sum(regions[int(i)] == r for i, (_, r) in zip(proto.argmax(-1), words))
        wrong = [f"{w}->{n}" for n, (w, r) in zip(near, words) if REGION[n] != r]
        print(
            f"{label:28s} nearest {right}/{len(words)}  prototype {right_proto}/{len(words)}  "
            f"max sim median {float(sims.max(-1).values.median()):.2f}  wrong: {', '.join(wrong)}"
        )
    for template in ("{}", "{}, a piece of clothing"):
        vec = enc.encode([template.format(w) for w, _ in words])
        for name, regions in DESCRIPTIONS.items():
            names = list(regions)
            protos = torch.stack([enc.encode(regions[r]).mean(0) for r in names])
            pick = [names[int(i)] for i in (vec @ protos.T).argmax(-1)]
            wrong = [f"{w}->{n}" for n, (w, r) in zip(pick, words) if n != r]
            print(
                f"{template!r} vs {name} descriptions: {len(words) - len(wrong)}/{len(words)}  wrong: {', '.join(wrong)}"
            )


if __name__ == "__main__":
    main()
