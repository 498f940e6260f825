"""Does a motion VAE of a given config learn gait at corpus scale? A short probe, faster to
iterate on than the stage (issue #26; docs/experiments/motion-priors.md).

Trains on every training window (heading-normalised, random mirror, the stage's data and its
``motion_vae_losses``) and prints, every ``--every`` steps, the normalised rotation loss and the
locomotion travel ratio / MPJPE of 256 training and 256 held-out windows, encoded (mean) and
decoded, and what 200 samples of the prior do (share travelling >= 0.5 m, APD, median jerk). The
stage (``train.py stage=train_motion_vae``) is what ships weights; this is for choosing its settings.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/motion_vae/corpus_probe.py --backbone conv --steps 1500
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from torch.utils.data import DataLoader

from avatar.evaluation.priors import clip_statistics
from avatar.priors.data import load_corpus
from avatar.priors.motion_overfit import OVERFIT_VAE, reconstruction_scores
from avatar.priors.motion_vae import MotionVAE, canonical_to_features, features_to_canonical
from avatar.priors.training import (
    HeadingNormalisedWindows,
    feature_statistics_windows,
    motion_vae_losses,
)
from avatar.stages.base import warmup_cosine


def sample_windows(corpus, count: int, seed: int) -> torch.Tensor:
    windows = HeadingNormalisedWindows(corpus, 60, stride=60, mirror_prob=0.0)
    idx = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return torch.stack([windows[i][0] for i in idx])


@torch.no_grad()
def sample_scores(model: MotionVAE, count: int = 200, seed: int = 0) -> dict[str, float]:
    """What ``count`` clips decoded from the model's prior draws (``sample_codes``: N(0, I) until a
    code prior is fitted) do, as ``avatar-eval priors`` measures them (share travelling, APD,
    median jerk)."""
    was_training = model.training
    z = model.sample_codes(count, torch.Generator().manual_seed(seed))
    clips = features_to_canonical(model.eval().decode(z))
    model.train(was_training)
    return clip_statistics(clips)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="conv")
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--conv-levels", type=int, default=3, help="conv: halvings of time before the code")
    p.add_argument("--conv-channels", type=int, default=0, help="conv: channel width (0: latent dim)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--stride", type=int, default=5)
    p.add_argument("--lambda-kl", type=float, default=1e-4)
    p.add_argument("--lambda-joints", type=float, default=0.0)
    p.add_argument("--lambda-velocity", type=float, default=0.0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--speed-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="tempo augmentation: each training window played at a random speed in [LOW, HIGH]",
    )
    args = p.parse_args()
    torch.manual_seed(args.seed)
    train, test = load_corpus().split()
    config = replace(OVERFIT_VAE, backbone=args.backbone, latent_dim=args.latent_dim, num_layers=args.layers,
                     ff_size=4 * args.latent_dim, dropout=args.dropout, conv_levels=args.conv_levels,
                     conv_channels=args.conv_channels)  # fmt: skip
    model = MotionVAE(config).train()
    model.set_feature_statistics(canonical_to_features(feature_statistics_windows(train, 60), 22))
    seen, held = sample_windows(train, 256, 1), sample_windows(test, 256, 0)
    windows = HeadingNormalisedWindows(train, 60, stride=args.stride, speed_range=args.speed_range)
    loader = DataLoader(windows, batch_size=args.batch_size,
                        shuffle=True, drop_last=True)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.warmup_steps, args.steps))
    weights = {"rotation": 1.0, "kl": args.lambda_kl, "joints": args.lambda_joints, "velocity": args.lambda_velocity}
    terms = {k for k, w in weights.items() if w}
    print(f"{config}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    step, start, running = 0, time.perf_counter(), []
    while step < args.steps:
        for rotations, _ in loader:
            kl_scale = min(1.0, step / 1000)  # annealed in over 1,000 steps (the stage: 2,000)
            losses = motion_vae_losses(model, rotations, terms)
            loss = sum(weights[k] * (kl_scale if k == "kl" else 1.0) * v for k, v in losses.items())
            optimizer.zero_grad()
            loss.backward()
            if args.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            optimizer.step()
            schedule.step()
            running.append(float(losses["rotation"]))
            step += 1
            if step % args.every == 0 or step == args.steps:
                (tr, tm), (hr, hm) = reconstruction_scores(model, seen), reconstruction_scores(model, held)
                samples = sample_scores(model)
                print(f"step {step}: rotation {sum(running) / len(running):.3f} kl {float(losses['kl']):.0f} | "
                      f"train ratio {tr:.3f} MPJPE {tm:.1f} | held-out ratio {hr:.3f} MPJPE {hm:.1f} | "
                      f"samples: travelling {samples['travelling']:.0%} APD {samples['apd_mm']:.0f} "
                      f"jerk {samples['jerk']:.0f} | "
                      f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
                running = []
            if step == args.steps:
                break


if __name__ == "__main__":
    main()
