"""The aggregate-posterior sampler with its training windows weighted per recording: each
window's weight 1 / (windows of its clip) ("clip") or 1 / (windows of its subject) ("subject"),
against every window equal ("window", what ``sample_codes`` did until 2026-12-06). The training
corpus's windows are dominated by a few long recordings (subject 14: 28 % of them, 5 %
travelling), so per-window sampling mostly replays them. For each weighting: the training windows'
own weighted travel share and APD (1,000 windows drawn by weight), the samples' share, APD,
median jerk and distance to the nearest training window (as ``avatar-eval priors``).
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06 (fourth), "balancing the
sampler per recording"); the numbers in that log came from this.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/balanced_mixture.py FILE [--samples 1000]
"""

import argparse

import numpy as np
import torch

from avatar.evaluation.priors import clip_statistics, nearest_window_mm, reference_joints
from avatar.priors.data import MotionWindows, load_corpus
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("--samples", type=int, default=1000)
args = parser.parse_args()
torch.set_num_threads(2)
gen = torch.Generator().manual_seed(0)
train, _ = load_corpus().split()
m = load_motion_prior(PriorConfig(motion_prior=args.file))
c = m.config
windows = feature_statistics_windows(train, c.num_frames)  # window i and its mirror image at 2i, 2i + 1
plain = MotionWindows(train, c.num_frames, stride=c.num_frames, mirror_prob=0.0)
clip = np.repeat(np.searchsorted(np.asarray(train.clip_starts), np.asarray(plain.starts), side="right") - 1, 2)
subject = np.array([train.subjects[k] for k in clip])
assert len(clip) == len(windows) == c.code_prior_components, (len(clip), len(windows), c.code_prior_components)
reference = reference_joints(feature_statistics_windows(train, c.num_frames, 10))
moving = torch.tensor([locomotion_share(w[None]) for w in windows])


def per_group(groups: np.ndarray) -> torch.Tensor:
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return torch.tensor(1.0 / counts[inverse], dtype=torch.float64)


print(
    "| weighting | training windows travelling (weighted) | their APD | samples travelling | APD | jerk | nearest window (mm) |"
)
print("|---|---|---|---|---|---|---|")
for name, weight in [("window", torch.ones(len(clip), dtype=torch.float64)), ("clip", per_group(clip)),
                     ("subject", per_group(subject))]:  # fmt: skip
    weight = weight / weight.sum()
    pick = torch.multinomial(weight, args.samples, replacement=True, generator=gen)
    mean, std = m.code_components_mean[pick].float(), m.code_components_std[pick].float()
    raw = mean + std * torch.randn(mean.shape, generator=gen)
    with torch.no_grad():
        z = torch.linalg.solve_triangular(m.code_scale_tril.float(), (raw - m.code_mean.float()).T, upper=False).T
        clips = torch.cat([features_to_canonical(m.decode(part)) for part in z.split(256)])
    s = clip_statistics(clips)
    data_apd = clip_statistics(windows[torch.multinomial(weight, args.samples, replacement=True, generator=gen)])[
        "apd_mm"
    ]
    print(f"| {name} | {float((weight * moving).sum()):.1%} | {data_apd:.0f} | {s['travelling']:.1%} | {s['apd_mm']:.0f} | "
          f"{s['jerk']:.0f} | {nearest_window_mm(clips, reference):.0f} |")  # fmt: skip
