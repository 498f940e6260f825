"""Draws from N(0, I), from a full Gaussian and from a diagonal Gaussian fitted to the training codes
(2,704 feature-statistics windows), per file.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/gaussian_fit.py FILE [FILE ...]
"""

import sys

import torch

from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

torch.set_num_threads(1)
train, test = load_corpus().split()
clips = torch.cat([feature_statistics_windows(train, 60)])  # stride 60 + mirrors
print("windows", clips.shape)
for f in sys.argv[1:]:
    m = load_motion_prior(PriorConfig(motion_prior=f))
    with torch.no_grad():
        mus, sig2 = [], []
        for c in clips.split(256):
            mu, logvar = m._encode_raw(canonical_to_features(c, 22))
            mus.append(mu)
            sig2.append(logvar.exp())
        mu = torch.cat(mus)
        s2 = torch.cat(sig2)
        mean = mu.mean(0)
        cov = torch.cov(mu.T) + torch.diag(s2.mean(0))
        L = torch.linalg.cholesky(cov.double()).float()
        eps = torch.randn(200, m.config.latent_dim, generator=torch.Generator().manual_seed(0))
        for name, z in (
            ("N(0,I)", eps),
            ("fitted full Gaussian", mean + eps @ L.T),
            ("fitted diagonal", mean + eps * cov.diag().sqrt()),
        ):
            s = features_to_canonical(m._decode_raw(z))
            j = sequence_joints(s)
            print(
                f"  {f.split('/')[-1]} {name}: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f}"
            )
