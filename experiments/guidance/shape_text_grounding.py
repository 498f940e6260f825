"""Can mini's text side learn "muscular" and "old" from renders that carry them? (issue #28;
docs/experiments/guidance-model.md, 2026-12-05 night.)

The shape stage's renders carry muscle and age (experiments/guidance/shape_probe.py), but the text
directions of the grammar's "muscular" / "old" point at short-and-heavy. This fine-tunes only the
text tower's trained parts (top MiniLM layers, pooling head, projection; the image tower is frozen,
so every cached image embedding stays valid) on bodies rendered as the shape stage renders its
codebook, drawn with another seed than the codebook's: for each shape prompt of the grammar, the
stage's direction score (image - neutral image) . (text - neutral text) over a batch of bodies is
pushed to correlate with the phenotype the prompt names, while a text anchor keeps the embeddings
of colour, pose and garment captions where the starting model put them.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/guidance/shape_text_grounding.py <out dir> [--bodies 1024] [--steps 200]

writes <out dir>/mini.pt; check it with
    avatar-eval paraphrase --kinds shape guidance.checkpoint=<out dir>/mini.pt
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from avatar.config import register_configs
from avatar.guidance import build_guidance
from avatar.guidance.synthetic.captions import caption
from avatar.guidance.synthetic.generator import SyntheticConfig, SyntheticRenderer
from avatar.guidance.training import ANCHOR_PROMPTS
from avatar.stages.shape import ShapeStage

ROOT = Path(__file__).resolve().parents[2]
# The grammar's shape prompts and the phenotype (and sign) each should move.
TARGETS = {
    "a muscular person": ("muscle", 1.0),
    "a muscular man": ("muscle", 1.0),
    "a muscular woman": ("muscle", 1.0),
    "an old person": ("age", 1.0),
    "an old man": ("age", 1.0),
    "an old woman": ("age", 1.0),
    "a tall person": ("height", 1.0),
    "a short person": ("height", -1.0),
    "a heavy person": ("weight", 1.0),
    "a slim person": ("weight", -1.0),
    "a man": ("gender", -1.0),
    "a woman": ("gender", 1.0),
    "a child": ("age", -1.0),
    "a boy": ("age", -1.0),
    "a girl": ("age", -1.0),
}


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x - x.mean(), y - y.mean()
    return (x * y).sum() / (x.norm() * y.norm() + 1e-8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--bodies", type=int, default=1024)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=256, help="bodies per step")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--lambda-anchor", type=float, default=2.0)
    p.add_argument("--anchor-texts", type=int, default=48, help="anchor texts per step")
    p.add_argument("--anchor-renders", type=int, default=64, help="synthetic samples whose captions are anchored")
    p.add_argument(
        "--lambda-retrieval",
        type=float,
        default=0.0,
        help="keep each anchor render's caption->image distribution over its batch (KL to the start)",
    )
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["stage=shape", f"run_dir={args.out / 'shape'}",
                                           f"stage.codebook_seed={1000 + args.seed}",
                                           f"stage.codebook_size={args.bodies + 1}"])  # fmt: skip
    stage = ShapeStage(cfg)
    guidance = build_guidance(cfg.guidance)
    model = guidance.model
    names = list(stage.body.shape_names)
    shapes = stage.sample_codebook()  # the neutral body first, then other draws than the codebook's
    images = stage.embed_shapes(guidance, shapes)  # (N + 1, E), fixed: the image tower is frozen
    neutral_image, images, shapes = images[0], images[1:], shapes[1:]
    print(f"{len(images)} bodies rendered and embedded in {time.perf_counter() - start:.0f} s", flush=True)

    # Anchor texts: the synthetic grammar's captions (colours, garments, poses) and the pipeline's
    # prompts, except the shape prompts this fine-tune is meant to move.
    renderer = SyntheticRenderer(SyntheticConfig())
    g = torch.Generator().manual_seed(args.seed)
    batches = [renderer.generate(64, g) for _ in range(0, args.anchor_renders, 64)]
    attributes = [a for b in batches for a in b.attributes]
    rng = random.Random(args.seed)
    captions = [caption(a, rng)[0] for a in attributes for _ in range(2)]
    with torch.no_grad():  # the frozen image tower's view of the anchor renders and their captions
        batch_images = [model.encode_image(b.images) for b in batches]
        batch_logits = [model.encode_text(b.captions) @ e.T for b, e in zip(batches, batch_images)]
    moved = ("muscular", "old")
    anchors = sorted({t for t in [*captions, *ANCHOR_PROMPTS] if not any(w in t.split() for w in moved)})
    template = stage.stage_cfg.template
    neutral_text = stage.stage_cfg.neutral_text
    prompts = [template.format(t) for t in TARGETS]
    targets = torch.stack([torch.sign(torch.tensor(s)) * shapes[:, names.index(n)] for n, s in TARGETS.values()])

    text = model.text
    text.train()
    trainable = [q for name, q in text.named_parameters() if name.startswith(text.trainable_prefixes)]
    for q in trainable:
        q.requires_grad_(True)
    with torch.no_grad():
        anchor_before = F.normalize(text(anchors), dim=-1)
    optimiser = torch.optim.Adam(trainable, lr=args.lr)
    for step in range(1, args.steps + 1):
        pick = torch.randperm(len(images))[: args.batch]
        emb = F.normalize(text([neutral_text, *prompts]), dim=-1)
        directions = F.normalize(emb[1:] - emb[:1], dim=-1)  # (P, E)
        scores = (images[pick] - neutral_image) @ directions.T  # (B, P)
        grounding = -torch.stack([pearson(scores[:, i], targets[i, pick]) for i in range(len(prompts))]).mean()
        chosen = rng.sample(range(len(anchors)), min(args.anchor_texts, len(anchors)))
        anchor_now = F.normalize(text([anchors[i] for i in chosen]), dim=-1)
        anchor = (1.0 - (anchor_now * anchor_before[chosen]).sum(-1)).mean()
        loss = grounding + args.lambda_anchor * anchor
        if args.lambda_retrieval:
            k = rng.randrange(len(batches))
            scale = model.logit_scale.exp().detach()
            now = model.encode_text(batches[k].captions) @ batch_images[k].T
            before = (scale * batch_logits[k]).log_softmax(-1)
            retrieval = F.kl_div((scale * now).log_softmax(-1), before, log_target=True, reduction="batchmean")
            loss = loss + args.lambda_retrieval * retrieval
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 20 == 0 or step == 1:
            with torch.no_grad():
                r = {n: round(float(pearson(scores[:, i], targets[i, pick])), 2) for i, n in enumerate(TARGETS)}
            print(f"step {step}: grounding {float(grounding):.3f} anchor {float(anchor):.4f} | {r} | "
                  f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    text.eval()
    payload = model.checkpoint({"made_by": "experiments/guidance/shape_text_grounding.py", "steps": args.steps,
                                "bodies": len(images), "seed": args.seed, "lambda_anchor": args.lambda_anchor})  # fmt: skip
    torch.save(payload, args.out / "mini.pt")
    print(f"wrote {args.out / 'mini.pt'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
