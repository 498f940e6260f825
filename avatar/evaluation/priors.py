"""Report on the shipped priors (avatar/priors/weights/): held-out reconstruction error, training
time and sample diversity, with the held-out data's own diversity as the yardstick.

    avatar-eval priors [--mocap-root ../shared/mocap] [--samples 1000]

Held-out = the subjects the training stages never saw (MotionCorpus.split, ~10% of frames). Errors are
mean per-joint position errors (MPJPE, mm) on the canonical template skeleton, root upright.
Diversity is the average pairwise distance (APD, mm) between samples' joints; smoothness, the
median over clips of their mean jerk (m/s^3, pelvis-fixed joints at 30 fps). Locomotion: on
held-out windows whose feet carry the body >= 0.5 m (walks, runs), the ground the motion VAE's
reconstructions cover over the ground the data covers (avatar.mocap.contact), and the share of
the VAE's random samples that travel that far next to the held-out windows' share. Novelty: the
median distance from a sample to its nearest training window (root-mean-square joint distance over
every 2nd frame, mm, pelvis at the origin; windows every ``--novelty-stride`` frames, with mirror
images), next to the held-out windows' (unseen subjects) and the training windows'
reconstructions' (near-copies).

    avatar-eval priors --motion-prior outputs/<run>/motion_vae.pt   # before publishing
"""

from __future__ import annotations

import argparse

import torch

from avatar.metrics.motion import jerk
from avatar.mocap.contact import contact_travel_distance
from avatar.priors.codebook import WEIGHTS_DIR
from avatar.priors.data import body_joints, load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_codebook, load_motion_prior, load_pose_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import (
    LOCOMOTION_MIN_TRAVEL,
    HeadingNormalisedWindows,
    feature_statistics_windows,
    locomotion_share,
    locomotion_travel_ratio,
    mpjpe_mm,
)
from avatar.priors.vposer import canonical_to_vposer, vposer_to_canonical


def apd_mm(joints: torch.Tensor) -> float:
    """Average pairwise distance between samples (N, ..., 22, 3), in mm."""
    flat = joints.reshape(joints.shape[0], -1, 3)
    n = flat.shape[0]
    total = 0.0
    for i in range(n):
        total += (flat[i + 1 :] - flat[i]).norm(dim=-1).mean(-1).sum().item()
    return total / (n * (n - 1) / 2) * 1000.0


def median_jerk(clips_joints: torch.Tensor, fps: float = 30.0) -> float:
    """Median over clips (N, T, 22, 3) of each clip's mean jerk magnitude (m/s^3)."""
    return float(torch.tensor([jerk(c, fps) for c in clips_joints]).median())


def clip_statistics(clips: torch.Tensor) -> dict[str, float]:
    """What a set of clips (N, T, 22, 3) does, samples or data alike: the share that travels
    ``LOCOMOTION_MIN_TRAVEL`` m (``travelling``), their APD (``apd_mm``) and median jerk
    (``jerk``, m/s^3)."""
    joints = sequence_joints(clips)
    return {"travelling": locomotion_share(clips), "apd_mm": apd_mm(joints), "jerk": median_jerk(joints)}


def nearest_window_mm(clips: torch.Tensor, reference: torch.Tensor) -> float:
    """Median over clips (N, T, 22, 3) of the root-mean-square joint distance (mm, pelvis at the
    origin, every 2nd frame) to the nearest of the ``reference`` joints (M, T // 2 * 22 * 3),
    from :func:`reference_joints`."""
    joints = sequence_joints(clips)[:, ::2].reshape(len(clips), -1)
    best = torch.cat([torch.cdist(c, reference).min(1).values for c in joints.split(100)])
    return float((best / (reference.shape[1] / 3) ** 0.5).median() * 1000)


def reference_joints(clips: torch.Tensor) -> torch.Tensor:
    """Clips (M, T, 22, 3) as :func:`nearest_window_mm` compares them."""
    return torch.cat([sequence_joints(c)[:, ::2].reshape(len(c), -1) for c in clips.split(1024)])


@torch.no_grad()
def training_windows_and_reconstructions(motion, train) -> tuple[torch.Tensor, torch.Tensor]:
    """The training windows the code prior is fitted to (:func:`feature_statistics_windows`:
    one every clip length, with mirror images) and their reconstructions: the sample share's
    yardstick, and near-copies (the floor of :func:`nearest_window_mm`)."""
    windows = feature_statistics_windows(train, motion.config.num_frames)
    decoded = []
    for part in windows.split(256):
        codes = motion.encode(canonical_to_features(part, motion.config.num_joints))[0]
        decoded.append(features_to_canonical(motion.decode(codes)))
    return windows, torch.cat(decoded)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mocap-root", default=None)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--motion-prior", default="", help="motion VAE weights to report (default: the shipped ones)")
    parser.add_argument("--novelty-stride", type=int, default=10,
                        help="frames between the training windows samples are compared with (0: skip)")  # fmt: skip


@torch.no_grad()
def run(args: argparse.Namespace) -> None:
    """``avatar-eval priors``."""
    gen = torch.Generator().manual_seed(args.seed)
    train, test = load_corpus(args.mocap_root).split()
    frames = test.rotations[torch.randperm(test.num_frames, generator=gen)[: args.samples]]
    data_apd = apd_mm(body_joints(frames))
    rows = [
        (
            "held-out data (yardstick)",
            "-",
            "-",
            f"{data_apd:.0f}",
            f"{test.num_frames} frames, subjects {sorted(set(test.subjects))}",
        )
    ]

    prior = load_pose_prior()
    body = canonical_to_vposer(test.rotations[::2])
    recon = torch.cat([prior.decode(prior.encode(chunk).mean)["pose_body"] for chunk in body.split(4096)])
    pose_err = mpjpe_mm(body_joints(vposer_to_canonical(recon)), body_joints(test.rotations[::2]))
    samples = prior.decode(torch.randn(args.samples, prior.latent_dim, generator=gen))["pose_body"]
    meta = torch.load(WEIGHTS_DIR / "pose_prior.pt", weights_only=True)["meta"]
    rows.append(("pose prior (VPoser arch, 32-d)", f"{pose_err:.1f}", f"{meta['train_seconds']:.0f}",
                 f"{apd_mm(body_joints(vposer_to_canonical(samples))):.0f}", f"{meta['steps']} steps"))  # fmt: skip

    codebook = load_codebook()
    _, q_err = codebook.nearest(test.rotations[::2])
    idx = torch.randperm(len(codebook), generator=gen)[: args.samples]
    rows.append((f"pose codebook ({len(codebook)} poses)", f"{q_err.mean() * 1000:.1f}",
                 f"{codebook.meta['build_seconds']:.0f}", f"{apd_mm(codebook.joints[idx]):.0f}", "nearest-entry error"))  # fmt: skip

    motion_file = args.motion_prior or str(WEIGHTS_DIR / "motion_vae.pt")
    motion = load_motion_prior(PriorConfig(motion_prior=motion_file))
    n_joints = motion.config.num_joints
    windows = HeadingNormalisedWindows(test, motion.config.num_frames, stride=motion.config.num_frames, mirror_prob=0.0)
    clips = torch.stack([windows[i][0] for i in range(len(windows))])
    errs, decoded = [], []
    for chunk in clips.split(64):
        mu, _ = motion.encode(canonical_to_features(chunk, n_joints))
        decoded.append(features_to_canonical(motion.decode(mu, chunk.shape[1])))
        errs.append((sequence_joints(decoded[-1]) - sequence_joints(chunk)).norm(dim=-1).mean(dim=(1, 2)))
    motion_err = float(torch.cat(errs).mean() * 1000)
    data = clip_statistics(clips)
    meta = torch.load(motion_file, weights_only=True)["meta"]
    locomotion = locomotion_travel_ratio(clips, torch.cat(decoded))
    c = motion.config
    stride = args.novelty_stride
    reference = reference_joints(feature_statistics_windows(train, c.num_frames, stride)) if stride else None

    def novelty(clips_: torch.Tensor) -> str:
        return "" if reference is None else f"; nearest training window {nearest_window_mm(clips_, reference):.0f} mm"

    rows.append((f"motion VAE ({c.backbone}, d={c.latent_dim}, {c.num_layers}+{c.num_layers} layers)", f"{motion_err:.1f}",
                 f"{meta['train_seconds']:.0f}", "-",
                 f"{meta['steps']} steps; {len(clips)} held-out 60-frame windows: travelling {data['travelling']:.0%}, "
                 f"APD {data['apd_mm']:.0f} mm, jerk {data['jerk']:.0f} m/s^3{novelty(clips)}; locomotion travel ratio "
                 f"{locomotion.get('heldout_locomotion_travel_ratio', float('nan')):.2f} "
                 f"({locomotion.get('heldout_locomotion_windows', 0)} windows)"))  # fmt: skip
    windows, decoded_windows = training_windows_and_reconstructions(motion, train)
    moving = torch.tensor([contact_travel_distance(w) >= LOCOMOTION_MIN_TRAVEL for w in windows], dtype=torch.float64)
    weighted = ""
    if c.code_prior_components == len(windows):  # the windows' share as the sampler weighs them
        weight = motion.code_components_weight.double().cpu()
        drawn = windows[torch.multinomial(weight, args.samples, replacement=True,
                                          generator=torch.Generator().manual_seed(args.seed + 1))]  # fmt: skip
        weighted = (f" (weighted as the sampler draws them: {float((weight * moving).sum() / weight.sum()):.0%}; "
                    f"APD of {args.samples} drawn so {apd_mm(sequence_joints(drawn)):.0f} mm)")  # fmt: skip
    rows.append(("motion VAE reconstructions of training windows", "-", "-", "-",
                 f"{len(windows)} training windows (every {c.num_frames} frames, with mirror images) travelling >= "
                 f"{LOCOMOTION_MIN_TRAVEL} m: {float(moving.mean()):.0%}{weighted}, decoded "
                 f"{locomotion_share(decoded_windows):.0%}{novelty(decoded_windows[::2][:200])} (200 of them: near-copies)"))  # fmt: skip
    samplers = [("prior", motion.sample_codes(args.samples, gen))]
    if c.code_prior_components:  # the Gaussian the mixture's moments define, for comparison
        samplers.append(("N(0, I) of the whitened code", torch.randn(args.samples, c.latent_dim, generator=gen)))
    for name, z in samplers:
        sampled = torch.cat([features_to_canonical(motion.decode(part)) for part in z.split(256)])
        s = clip_statistics(sampled)
        rows.append((f"motion VAE samples: {name}", "-", "-", f"{s['apd_mm']:.0f}",
                     f"{args.samples} draws: travelling >= {LOCOMOTION_MIN_TRAVEL} m {s['travelling']:.0%}, "
                     f"jerk {s['jerk']:.0f} m/s^3{novelty(sampled)}"))  # fmt: skip

    header = ("model", "held-out MPJPE (mm)", "train time (s)", "sample APD (mm)", "notes")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
