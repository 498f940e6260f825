"""Gaussians fitted to the codes of walking (>= 0.5 m) and of other training windows, sampled.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/walking_gaussian.py FILE
"""

import sys

import torch

from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.mocap.contact import contact_travel_distance
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

torch.set_num_threads(2)
train, test = load_corpus().split()
clips = feature_statistics_windows(train, 60)
walk = torch.tensor([contact_travel_distance(c) >= 0.5 for c in clips])
print("walking windows", int(walk.sum()), "of", len(clips))
m = load_motion_prior(PriorConfig(motion_prior=sys.argv[1]))
with torch.no_grad():
    mu, logvar = m._encode_raw(canonical_to_features(clips, 22))
    g = torch.Generator().manual_seed(0)
    for name, sel in (("walking only", walk), ("not walking", ~walk)):
        x = mu[sel].double()
        cov = torch.cov(x.T) + torch.diag(logvar[sel].exp().double().mean(0) + 1e-5)
        L = torch.linalg.cholesky(cov).float()
        mean = x.mean(0).float()
        z = mean + torch.randn(200, mu.shape[1], generator=g) @ L.T
        s = features_to_canonical(m._decode_raw(z))
        j = sequence_joints(s)
        print(
            f"Gaussian of {name} codes: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f}"
        )
