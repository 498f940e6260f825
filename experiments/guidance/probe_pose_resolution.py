"""Does the image tower see a walking stride at a higher resolution? A cheap check before a retrain.

Trains the ``mini`` image tower's architecture from scratch as a classifier of the body pose word
(read from the geometry, avatar.guidance.synthetic.poses; "no word" is a class) on synthetic
body renders (no face close-ups) at one image size, then reports, on held-out renders, the
accuracy and each word's one-vs-rest ROC-AUC (also split into side and front/back views). Same seeds, steps and batches for every size, so
two runs differ only in resolution (and the tower's flattened head, which grows with it).

    .venv/bin/python experiments/guidance/probe_pose_resolution.py --size 64 --steps 300
    .venv/bin/python experiments/guidance/probe_pose_resolution.py --size 96 --steps 300
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from avatar.guidance.mini_model import ImageTower, MiniModelConfig
from avatar.guidance.synthetic.generator import SyntheticConfig, SyntheticRenderer, stride_hidden
from avatar.guidance.synthetic.poses import BODY_WORDS

CLASSES = (None, *BODY_WORDS)
FRONT_BACK_DEG = 45.0  # a side view: the camera more than 45 degrees off the body's front and back


def labels(batch) -> torch.Tensor:
    return torch.tensor([CLASSES.index(a["pose"]["body"]) for a in batch.attributes])


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image size (the shipped mini: 64)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.size % 16:
        raise SystemExit(f"--size={args.size}: the tower halves the image four times; use a multiple of 16 (64, 96)")
    torch.manual_seed(args.seed)
    synthetic = SyntheticRenderer(SyntheticConfig(image_size=args.size, face_prob=0.0))
    tower = ImageTower(MiniModelConfig(image_size=args.size))
    classify = torch.nn.Linear(tower.head[-1].out_features, len(CLASSES))
    params = [*tower.parameters(), *classify.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    render_s = train_s = 0.0
    for step in range(args.steps):
        start = time.perf_counter()
        batch = synthetic.generate(args.batch, g)
        render_s += time.perf_counter() - start
        start = time.perf_counter()
        loss = F.cross_entropy(classify(tower(batch.images)), labels(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_s += time.perf_counter() - start
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    held_out = synthetic.generate(args.eval_samples, torch.Generator().manual_seed(10_000_019))
    target = labels(held_out)
    with torch.no_grad():
        prob = torch.cat([classify(tower(part)).softmax(-1) for part in held_out.images.split(128)])
    result = {
        "size": args.size, "steps": args.steps, "batch": args.batch,
        "accuracy": round(float((prob.argmax(-1) == target).float().mean()), 3),
        "render_s_per_step": round(render_s / args.steps, 2), "train_s_per_step": round(train_s / args.steps, 2),
    }  # fmt: skip
    # Seen from the side a stride is in the silhouette; from the front or back it is depth only.
    side = torch.tensor([not stride_hidden(a["azimuth_deg"], FRONT_BACK_DEG) for a in held_out.attributes])
    for k, word in enumerate(CLASSES):
        for name, keep in (("", torch.ones_like(side)), (" side views", side), (" front/back views", ~side)):
            positives = int((target[keep] == k).sum())
            if 0 < positives < int(keep.sum()):
                auc = roc_auc_score(target[keep] == k, prob[keep, k])
                result[f"auc {word or 'no word'}{name} ({positives}/{int(keep.sum())})"] = round(float(auc), 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
