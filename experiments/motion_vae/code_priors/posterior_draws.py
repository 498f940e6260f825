"""200 training windows, their posterior means and their posterior draws, decoded: what the decoder can
do around real codes.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/posterior_draws.py FILE
"""

import sys

import torch

from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

torch.set_num_threads(2)
train, test = load_corpus().split()
clips = feature_statistics_windows(train, 60)
g = torch.Generator().manual_seed(0)
idx = torch.randperm(len(clips), generator=g)[:200]
sel = clips[idx]
print(
    "training windows (200 drawn): travelling %.0f%% APD %.0f jerk %.0f"
    % (100 * locomotion_share(sel), apd_mm(sequence_joints(sel)), median_jerk(sequence_joints(sel)))
)
m = load_motion_prior(PriorConfig(motion_prior=sys.argv[1]))
with torch.no_grad():
    mu, logvar = m._encode_raw(canonical_to_features(sel, 22))
    for name, z in (
        ("posterior means", mu),
        ("posterior draws", mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()),
    ):
        s = features_to_canonical(m._decode_raw(z))
        j = sequence_joints(s)
        print(f"{name}: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f}")
