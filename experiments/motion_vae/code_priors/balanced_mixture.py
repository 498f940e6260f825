"""The aggregate-posterior sampler with its training windows weighted per recording: each
window's weight 1 / (windows of its clip) ("clip") or 1 / (windows of its subject) ("subject"),
against every window equal ("window", what ``sample_codes`` did until 2026-12-06). The training
corpus's windows are dominated by a few long recordings (subject 14: 28 % of them, 5 %
travelling), so per-window sampling mostly replays them. First, each weighting's travel share of
the training and held-out subjects' windows (every 10 frames). Then, for each weighting: the
training windows' own weighted travel share and APD (1,000 windows drawn by weight), the samples' share, APD,
median jerk and distance to the nearest training window (as ``avatar-eval priors``).
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06 (fourth), "balancing the
sampler per recording"); the numbers in that log came from this.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/balanced_mixture.py FILE [--samples 1000]
"""

import argparse

import torch

from avatar.evaluation.priors import clip_statistics, nearest_window_mm, reference_joints
from avatar.priors.data import load_corpus
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import features_to_canonical
from avatar.priors.training import (
    SAMPLE_BALANCES,
    feature_statistics_groups,
    feature_statistics_weights,
    feature_statistics_windows,
    locomotion_share,
)

parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("--samples", type=int, default=1000)
parser.add_argument("--per-subject", action="store_true", help="also each subject's windows and travel share")
args = parser.parse_args()
torch.set_num_threads(2)
gen = torch.Generator().manual_seed(0)
train, held_out = load_corpus().split()
m = load_motion_prior(PriorConfig(motion_prior=args.file))
c = m.config
windows = feature_statistics_windows(train, c.num_frames)  # the clips whose posteriors the file keeps
assert len(windows) == c.code_prior_components, (len(windows), c.code_prior_components)
reference = reference_joints(feature_statistics_windows(train, c.num_frames, 10))
moving = torch.tensor([locomotion_share(w[None]) for w in windows])

print(
    "| data (60-frame windows every 10 frames) | windows | travelling: each window equal | each clip | each subject |"
)
print("|---|---|---|---|---|")
for part, corpus in zip(("training subjects", "held-out subjects"), (train, held_out)):
    every = feature_statistics_windows(corpus, c.num_frames, 10)[::2]  # without the mirror images
    travels = torch.tensor([locomotion_share(w[None]) for w in every], dtype=torch.float64)
    shares = []
    for name in SAMPLE_BALANCES:
        weight = feature_statistics_weights(corpus, c.num_frames, name, 10)[::2]
        shares.append(f"{float((weight * travels).sum() / weight.sum()):.0%}")
    print(f"| {part} ({len(set(corpus.subjects))}) | {len(every)} | " + " | ".join(shares) + " |")
    if args.per_subject:
        subjects = feature_statistics_groups(corpus, c.num_frames, "subject", 10)[::2]
        for name in sorted(set(subjects), key=lambda n: -(subjects == n).sum()):
            mine = torch.from_numpy(subjects == name)
            print(f"| subject {name} | {int(mine.sum())} | {float(travels[mine].mean()):.0%} | | |")

header = "| weighting | training windows travelling (weighted) | their APD | samples travelling | APD | jerk | nearest window |"
print(header + "\n|---|---|---|---|---|---|---|")
for name in SAMPLE_BALANCES:
    weight = feature_statistics_weights(train, c.num_frames, name)
    m.code_components_weight.copy_(weight / weight.max())  # as fit_code_prior stores them
    with torch.no_grad():
        clips = torch.cat(
            [features_to_canonical(m.decode(part)) for part in m.sample_codes(args.samples, gen).split(256)]
        )
    s = clip_statistics(clips)
    data = clip_statistics(windows[torch.multinomial(weight, args.samples, replacement=True, generator=gen)])
    print(f"| {name} | {float((weight * moving).sum()):.1%} | {data['apd_mm']:.0f} | {s['travelling']:.1%} | "
          f"{s['apd_mm']:.0f} | {s['jerk']:.0f} | {nearest_window_mm(clips, reference):.0f} mm |")  # fmt: skip
