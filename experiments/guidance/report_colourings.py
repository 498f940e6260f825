"""Which fixed colouring of the body does a guidance model prefer for "a person in a red shirt
and blue trousers"? A check of the objective, apart from an optimiser's path to it: if a model
ranks red top / blue trousers first and a stage still ends elsewhere, the stage's dynamics are
at fault, not the model's optimum.

    .venv/bin/python experiments/guidance/report_colourings.py [--checkpoint A.pt B.pt ...] [--views 48]

The full Anny body at rest is coloured per body region (shirt = torso and arms, trousers = hips
and legs, skin elsewhere, grey feet), rendered from the same random views for every colouring
(noise backgrounds, random crops) and scored by mean cosine with the prompt in the template of
each view kind: the colour check's views with the appearance stage's body template, the
appearance stage's (AvatarCLIP's) views, and its face close-ups with the face template.
"""

from __future__ import annotations

import argparse

import torch

from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
from avatar.body.regions import REGIONS, vertex_regions
from avatar.body.skeleton import JOINT_INDEX
from avatar.guidance import build_guidance
from avatar.guidance.augment import random_crops
from avatar.guidance.mini import MINI_CHECKPOINT, MiniGuidanceConfig
from avatar.render import MeshRenderConfig, MeshRenderer, ViewSamplingConfig, make_background, sample_views
from avatar.stages.appearance import AppearanceStageConfig

SUBJECT = "a person in a red shirt and blue trousers"
TEMPLATES = {"body": AppearanceStageConfig.prompt_template, "face": AppearanceStageConfig.face_template}
VIEWS = {  # name -> (view sampling, template)
    "colour check views": (ViewSamplingConfig(polar_std_deg=45.0, distance_range=(2.0, 2.6)), "body"),
    "appearance views": (ViewSamplingConfig(face_every=0), "body"),
    "face close-ups": (ViewSamplingConfig(face_every=1), "face"),
}
RED, BLUE, SKIN, GREY = (0.9, 0.0, 0.0), (0.0, 0.0, 0.9), (0.8, 0.6, 0.5), (0.3, 0.3, 0.3)
COLORINGS = {  # name -> (shirt, trousers)
    "red top / blue trousers": (RED, BLUE),
    "blue top / red trousers": (BLUE, RED),
    "all blue": (BLUE, BLUE),
    "all red": (RED, RED),
    "all grey": ((0.5,) * 3, (0.5,) * 3),
}


def region_colors(regions: torch.Tensor, shirt, trousers) -> torch.Tensor:
    colors = torch.tensor(SKIN).repeat(len(regions), 1)
    for i, region in enumerate(REGIONS):
        wanted = {"torso": shirt, "arms": shirt, "hips": trousers, "legs": trousers, "feet": GREY}.get(region)
        if wanted is not None:
            colors[regions == i] = torch.tensor(wanted)
    return colors


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", nargs="+", default=[MINI_CHECKPOINT])
    parser.add_argument("--views", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    body = AnnyBody(AnnyBodyConfig())
    out = body()
    vertices, head = out.vertices[0].float(), out.joints[0, JOINT_INDEX["head"]].float()
    regions = vertex_regions(body.skinning_weights)
    renderer = MeshRenderer(MeshRenderConfig(height=args.size, width=args.size))
    centre = 0.5 * (vertices.amax(0) + vertices.amin(0))
    print("| checkpoint | views | " + " | ".join(COLORINGS) + " |\n|---|---|" + "---|" * len(COLORINGS))
    for checkpoint in args.checkpoint:
        guidance = build_guidance(MiniGuidanceConfig(checkpoint=checkpoint))
        for name, (sampling, template) in VIEWS.items():
            g = torch.Generator().manual_seed(0)
            cameras, info = sample_views(args.views, sampling, g, centre, face_target=head, step=0)
            background = make_background("noise", args.views, args.size, args.size, g)
            text = guidance.encode_text([TEMPLATES[template].format(SUBJECT)])
            scores = []
            for shirt, trousers in COLORINGS.values():
                rgb = renderer.render(vertices, body.faces, cameras, colors=region_colors(regions, shirt, trousers),
                                      background=background, light_dir=info["light_dir"], ambient=0.3 + info["ambient"]).rgb  # fmt: skip
                image = guidance.encode_image(random_crops(rgb, torch.Generator().manual_seed(1)))
                scores.append(float((image @ text.T).mean()))
            print(f"| {checkpoint} | {name} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
