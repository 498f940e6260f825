"""Overfit check of the motion VAE: can a small VAE of the same code memorise a handful of real
walking windows? (issue #26; docs/experiments/motion-priors.md, 2026-12-05.)

A model that cannot memorise eight walks in a few hundred steps will not learn gait from the
corpus either, however long it trains. This trains a small :class:`MotionVAE` (same modules,
same losses as ``stage=train_motion_vae``: :func:`motion_vae_losses`) on the given windows only,
then encodes (mean) and decodes them and reports the locomotion travel ratio of
:func:`locomotion_travel_ratio` (1 = the walks still travel as far; the shipped free model: 0.01)
and the MPJPE, as the stage's held-out metrics are measured.

    .venv/bin/python -m avatar.priors.motion_overfit                      # 8 windows, 400 steps
    .venv/bin/python -m avatar.priors.motion_overfit --legacy             # the code before the fixes
    .venv/bin/python -m avatar.priors.motion_overfit --no-normalise       # one fix switched off
    .venv/bin/python -m avatar.priors.motion_overfit --legacy --normalise # one fix alone
    .venv/bin/python -m avatar.priors.motion_overfit --windows 45 --latent-dim 128 --layers 3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import torch

from avatar.mocap.contact import contact_travel_distance
from avatar.priors.data import MotionCorpus, load_corpus, sequence_joints
from avatar.priors.motion_vae import MotionVAE, MotionVAEConfig, canonical_to_features, features_to_canonical
from avatar.priors.training import (
    LOCOMOTION_MIN_TRAVEL,
    HeadingNormalisedWindows,
    locomotion_travel_ratio,
    motion_vae_losses,
)
from avatar.stages.base import warmup_cosine

# A small VAE of the stage's code and recipe (normalised features, pre-LN layers, narrow
# initial posterior), without dropout: memorising is the point.
OVERFIT_VAE = MotionVAEConfig(
    num_joints=22, latent_dim=128, num_layers=2, num_heads=4, ff_size=512, dropout=0.0,
    variational=True, normalise=True, norm_first=True, logvar_init=-6.0,
)  # fmt: skip
# The same VAE as the code trained before the fixes (the shipped motion_vae.pt's recipe).
LEGACY_VAE = replace(OVERFIT_VAE, normalise=False, norm_first=False, logvar_init=0.0)


@dataclass
class OverfitResult:
    travel_ratio: float  # ground the decoded windows cover over the windows' own (1 = kept)
    mpjpe_mm: float  # encode (mean) -> decode error, root orientation included
    loss: float  # last step's weighted training loss
    steps: int
    seconds: float


def walking_windows(
    corpus: MotionCorpus, count: int, num_frames: int = 60, stride: int | None = None, seed: int = 0
) -> torch.Tensor:
    """``count`` heading-normalised windows (count, T, 22, 3) of ``corpus`` whose feet carry the
    body >= LOCOMOTION_MIN_TRAVEL (walks, runs), drawn at random (``seed``) from the windows
    taken every ``stride`` frames (default: half a window)."""
    windows = HeadingNormalisedWindows(corpus, num_frames, stride=stride or num_frames // 2, mirror_prob=0.0)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed)).tolist()
    picked = []
    for i in order:
        rotations = windows[i][0]
        if contact_travel_distance(rotations) >= LOCOMOTION_MIN_TRAVEL:
            picked.append(rotations)
            if len(picked) == count:
                break
    if not picked:
        raise ValueError(f"No {num_frames}-frame window of the corpus travels {LOCOMOTION_MIN_TRAVEL} m")
    return torch.stack(picked)


@torch.no_grad()
def reconstruct(model: MotionVAE, windows: torch.Tensor) -> torch.Tensor:
    """Windows (N, T, 22, 3) encoded (mean) and decoded, in eval mode."""
    was_training = model.training
    model.eval()
    mu, _ = model.encode(canonical_to_features(windows, model.config.num_joints))
    out = features_to_canonical(model.decode(mu, windows.shape[1]))
    model.train(was_training)
    return out


def reconstruction_scores(model: MotionVAE, windows: torch.Tensor) -> tuple[float, float]:
    """(locomotion travel ratio, MPJPE in mm) of ``windows`` (N, T, 22, 3) encoded (mean) and
    decoded, as the stage's held-out metrics measure them (ratio NaN without a walking window)."""
    decoded = reconstruct(model, windows)
    mpjpe = float((sequence_joints(decoded) - sequence_joints(windows)).norm(dim=-1).mean() * 1000.0)
    ratio = locomotion_travel_ratio(windows, decoded).get("heldout_locomotion_travel_ratio", float("nan"))
    return ratio, mpjpe


def overfit_motion_vae(
    windows: torch.Tensor,
    config: MotionVAEConfig = OVERFIT_VAE,
    steps: int = 400,
    lr: float = 2e-3,
    warmup_steps: int = 20,
    batch_size: int = 16,
    weights: dict[str, float] | None = None,
    seed: int = 0,
) -> tuple[OverfitResult, MotionVAE]:
    """Train a MotionVAE of ``config`` on ``windows`` (N, T, 22, 3) alone for ``steps`` Adam steps
    (batches drawn with replacement, the stage's warm-up + cosine schedule) and measure how well
    it reproduces them. ``weights``: the loss weights (default rotation 1, kl 1e-4; the stage
    also weights joints and velocity, which slow a CPU step ~2x). A normalising config takes its
    feature statistics from ``windows``, as the stage takes them from its training windows."""
    weights = {"rotation": 1.0, "kl": 1e-4} if weights is None else weights
    torch.manual_seed(seed)
    model = MotionVAE(replace(config, num_frames=windows.shape[1])).train()
    if config.normalise:
        model.set_feature_statistics(canonical_to_features(windows, config.num_joints))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, steps))
    terms = {name for name, w in weights.items() if w}
    gen = torch.Generator().manual_seed(seed)
    start, loss = time.perf_counter(), torch.zeros(())
    for _ in range(steps):
        batch = windows[torch.randint(len(windows), (batch_size,), generator=gen)]
        losses = motion_vae_losses(model, batch, terms)
        loss = sum(weights[name] * value for name, value in losses.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    ratio, mpjpe = reconstruction_scores(model, windows)
    return OverfitResult(ratio, mpjpe, float(loss.detach()), steps, round(seconds, 1)), model


def main(argv: list[str] | None = None) -> OverfitResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mocap-root", default=None, help="default ../shared/mocap")
    parser.add_argument("--windows", type=int, default=8, help="walking windows of the training subjects")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--latent-dim", type=int, default=OVERFIT_VAE.latent_dim)
    parser.add_argument("--layers", type=int, default=OVERFIT_VAE.num_layers)
    parser.add_argument("--backbone", default=OVERFIT_VAE.backbone, help="transformer or conv")
    parser.add_argument("--legacy", action="store_true", help="start from the code before the fixes (all three off)")
    parser.add_argument("--normalise", action=argparse.BooleanOptionalAction, help="fix 1 on/off")
    parser.add_argument("--norm-first", action=argparse.BooleanOptionalAction, help="fix 3 on/off")
    parser.add_argument("--logvar-init", type=float, default=None, help="fix 2: -6 on, 0 off")
    parser.add_argument("--lambda-kl", type=float, default=1e-4)
    parser.add_argument("--lambda-joints", type=float, default=0.0)
    parser.add_argument("--lambda-velocity", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = replace(LEGACY_VAE if args.legacy else OVERFIT_VAE, latent_dim=args.latent_dim,
                     num_layers=args.layers, ff_size=4 * args.latent_dim, backbone=args.backbone)  # fmt: skip
    if args.normalise is not None:
        config = replace(config, normalise=args.normalise)
    if args.norm_first is not None:
        config = replace(config, norm_first=args.norm_first)
    if args.logvar_init is not None:
        config = replace(config, logvar_init=args.logvar_init)
    train, _ = load_corpus(args.mocap_root).split()
    windows = walking_windows(train, args.windows, seed=args.seed)
    weights = {"rotation": 1.0, "kl": args.lambda_kl, "joints": args.lambda_joints, "velocity": args.lambda_velocity}
    result, _ = overfit_motion_vae(windows, config, args.steps, args.lr, args.warmup_steps, args.batch_size,
                                   weights, args.seed)  # fmt: skip
    print(f"{len(windows)} walking windows, normalise={config.normalise} norm_first={config.norm_first} "
          f"logvar_init={config.logvar_init} d={config.latent_dim} layers={config.num_layers}: "
          f"travel ratio {result.travel_ratio:.3f}, MPJPE {result.mpjpe_mm:.1f} mm, loss {result.loss:.4f}, "
          f"{result.steps} steps in {result.seconds:.0f} s")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
