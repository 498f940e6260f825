"""Can mini's text side learn "muscular" and "old" from renders that carry them? (issue #28;
docs/experiments/guidance-model.md, 2026-12-05 night.)

The shape stage's renders carry muscle and age (experiments/guidance/shape_probe.py), but the text
directions of the grammar's "muscular" / "old" point at short-and-heavy. This fine-tunes only the
text tower's trained parts (top MiniLM layers, pooling head, projection; the image tower is frozen,
so every cached image embedding stays valid) on bodies rendered as the shape stage renders its
codebook, drawn with another seed than the codebook's: for each shape prompt of the grammar, the
stage's direction score (image - neutral image) . (text - neutral text) over a batch of bodies is
pushed to correlate with the phenotype the prompt names, while a text anchor keeps the embeddings
of colour, pose and garment captions where the starting model put them, and (--contrastive-renders)
the training stage's own contrastive and colour-swap losses keep the captions of synthetic renders
matched to the frozen image tower's embeddings of them.

The best variant so far (C in docs/experiments/guidance-model.md, 2026-12-05 late; not shipped:
the motion stage and the test's colour check got worse):

    OMP_NUM_THREADS=1 .venv/bin/python experiments/guidance/shape_text_grounding.py <out dir> \
        --anchor-renders 512 --anchor-texts 128 --lambda-anchor 10 --contrastive-renders 2048 --lr 5e-5 --subject-gender 1

writes <out dir>/mini.pt (~25 min on a 2-core CPU; --init starts from another mini checkpoint than
the shipped one); check it with
    bash experiments/guidance/check_checkpoint.sh <out dir>/mini.pt <check dir>
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from avatar.config import register_configs
from avatar.engine.run_info import git_revision
from avatar.guidance import build_guidance
from avatar.guidance.synthetic.captions import caption, pose_negative, swap_negative
from avatar.guidance.synthetic.generator import SyntheticConfig, SyntheticRenderer
from avatar.guidance.text_map import pearson
from avatar.guidance.training import ANCHOR_PROMPTS, at_most_one, contrastive_loss, hard_negative_loss
from avatar.stages.shape import ShapeStage
from avatar.utils.io import atomic_path

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
# With --every-subject, each shape adjective with every subject noun ("a slim man", "a heavy woman").
ADJECTIVES = {"muscular": ("muscle", 1.0), "old": ("age", 1.0), "tall": ("height", 1.0), "short": ("height", -1.0),
              "heavy": ("weight", 1.0), "slim": ("weight", -1.0)}  # fmt: skip
EVERY_SUBJECT = {
    **{
        f"{'an' if a[0] in 'aeiou' else 'a'} {a} {noun}": t
        for a, t in ADJECTIVES.items()
        for noun in ("person", "man", "woman")
    },
    **{k: v for k, v in TARGETS.items() if len(k.split()) == 2},  # a man, a woman, a child, a boy, a girl
}
# With --subject-gender w, a prompt naming a man/boy or woman/girl also moves gender (Anny: 1 female).
GENDER = {"man": -1.0, "boy": -1.0, "woman": 1.0, "girl": 1.0}


def grounding_targets(shapes: torch.Tensor, names: list[str], goals: dict, subject_gender: float) -> torch.Tensor:
    """(P, N): per goal prompt, the signed z-score of the phenotype it names over the bodies
    ``shapes`` (N, D), plus ``subject_gender`` times gender's where it names a man/woman/boy/girl."""
    z = (shapes - shapes.mean(0)) / shapes.std(0).clamp_min(1e-6)
    gender = z[:, names.index("gender")]
    rows = []
    for prompt, (name, sign) in goals.items():
        weight = subject_gender * GENDER.get(prompt.split()[-1], 0.0) if name != "gender" else 0.0
        rows.append(sign * z[:, names.index(name)] + weight * gender)
    return torch.stack(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--bodies", type=int, default=1024)
    p.add_argument("--init", default="", help="the mini checkpoint to start from (default: the shipped one)")
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
    p.add_argument(
        "--contrastive-renders",
        type=int,
        default=0,
        help="synthetic renders (other seed than the evaluation's) whose captions keep training on the frozen image tower's embeddings",
    )
    p.add_argument("--contrastive-batch", type=int, default=128)
    p.add_argument(
        "--lambda-contrastive", type=float, default=1.0, help="the training stage's caption <-> image loss on that pool"
    )
    p.add_argument("--lambda-binding", type=float, default=1.0, help="... and its colour-swap loss")
    p.add_argument("--lambda-pose", type=float, default=0.0, help="... and its pose-word-changed loss")
    p.add_argument(
        "--subject-gender",
        type=float,
        default=0.0,
        help="weight of gender in the target of a prompt naming a man/woman/boy/girl (z-scores summed; 0: its phenotype alone)",
    )
    p.add_argument("--every-subject", action="store_true", help="every shape adjective with person, man and woman")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["stage=shape", f"run_dir={args.out / 'shape'}",
                                           f"stage.codebook_seed={1000 + args.seed}",
                                           f"stage.codebook_size={args.bodies + 1}",
                                           *([f"guidance.checkpoint={args.init}"] if args.init else [])])  # fmt: skip
    stage = ShapeStage(cfg)
    guidance = build_guidance(cfg.guidance)
    model = guidance.model
    model_meta = torch.load(cfg.guidance.checkpoint, map_location="cpu", weights_only=True).get("meta", {})
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
    # The training stage's own objective on a pool of synthetic renders: the image tower is frozen,
    # so their embeddings are computed once; captions (and colour-swapped negatives) get gradients.
    pool = [renderer.generate(128, torch.Generator().manual_seed(7000 + args.seed + k))
            for k in range(0, args.contrastive_renders, 128)]  # fmt: skip
    with torch.no_grad():
        pool_images = torch.cat([model.encode_image(b.images) for b in pool]) if pool else None
    pool_captions = [c for b in pool for c in b.captions]
    pool_plans = [(p_, a) for b in pool for p_, a in zip(b.plans, b.attributes)]
    swaps, poses = at_most_one(swap_negative), at_most_one(pose_negative)
    if pool:
        print(f"{len(pool_captions)} contrastive renders in {time.perf_counter() - start:.0f} s", flush=True)
    moved = ("muscular", "old")
    anchors = sorted({t for t in [*captions, *ANCHOR_PROMPTS] if not any(w in t.split() for w in moved)})
    template = stage.stage_cfg.template
    neutral_text = stage.stage_cfg.neutral_text
    goals = EVERY_SUBJECT if args.every_subject else TARGETS
    prompts = [template.format(t) for t in goals]
    targets = grounding_targets(shapes, names, goals, args.subject_gender)

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
        if pool:
            pick_c = torch.randperm(len(pool_captions))[: args.contrastive_batch].tolist()
            caps = [pool_captions[i] for i in pick_c]
            image_c = pool_images[pick_c]
            text_c = model.encode_text(caps)
            scale = model.logit_scale.exp().detach()
            loss = loss + args.lambda_contrastive * contrastive_loss(image_c, text_c, caps, scale)
            for weight, make_negative in ((args.lambda_binding, swaps), (args.lambda_pose, poses)):
                if weight:
                    negatives = [make_negative(*pool_plans[i], rng) for i in pick_c]
                    term = hard_negative_loss(model, image_c, text_c, negatives, scale)
                    if term is not None:
                        loss = loss + weight * term
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
                r = {n: round(float(pearson(scores[:, i], targets[i, pick])), 2) for i, n in enumerate(goals)}
            print(f"step {step}: grounding {float(grounding):.3f} anchor {float(anchor):.4f} | {r} | "
                  f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    text.eval()
    start_file = Path(cfg.guidance.checkpoint).expanduser()
    payload = model.checkpoint({
        "made_by": "experiments/guidance/shape_text_grounding.py", **vars(args), "out": str(args.out),
        "init": str(start_file), "init_sha1": hashlib.sha1(start_file.read_bytes()).hexdigest(),
        # what the evaluations read from the starting checkpoint (avatar-eval guidance's row note)
        "combinations": model_meta.get("combinations", "all"), "init_meta": model_meta,
        "git": git_revision()["commit"],
    })  # fmt: skip
    with atomic_path(args.out / "mini.pt") as tmp:
        torch.save(payload, tmp)
    print(f"wrote {args.out / 'mini.pt'} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
