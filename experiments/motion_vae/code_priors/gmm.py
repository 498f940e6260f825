"""Gaussian mixtures (scikit-learn, full covariance) fitted to the posterior means of 10,134 training
windows (stride 15, with mirrors), for each K given.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/gmm.py FILE K [K ...]
"""

import sys
import time

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

torch.set_num_threads(1)
train, test = load_corpus().split()
clips = feature_statistics_windows(train, 60, 15)  # with mirror images
print("windows", clips.shape, "travelling share", locomotion_share(clips[::7]))
m = load_motion_prior(PriorConfig(motion_prior=sys.argv[1]))
with torch.no_grad():
    mu = (
        torch.cat([m._encode_raw(canonical_to_features(c, 22))[0] for c in clips.split(256)]).numpy().astype(np.float64)
    )
for k in [int(a) for a in sys.argv[2:]]:
    t0 = time.time()
    g = GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=0, max_iter=200).fit(mu)
    z, _ = g.sample(200)
    z = torch.tensor(z, dtype=torch.float32)[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        s = features_to_canonical(m._decode_raw(z))
    j = sequence_joints(s)
    print(
        f"GMM k={k}: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f}  ({time.time() - t0:.0f} s)",
        flush=True,
    )
