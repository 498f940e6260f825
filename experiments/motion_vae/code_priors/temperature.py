"""N(0, I) draws at temperatures 1 / 0.5 / 0.3, and the spread of the training codes (mean std over
windows, mean posterior sigma), per motion VAE file.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/temperature.py FILE [FILE ...]
"""

import sys

import torch

from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import HeadingNormalisedWindows, locomotion_share

torch.set_num_threads(1)
train, test = load_corpus().split()
w = HeadingNormalisedWindows(train, 60, stride=60, mirror_prob=0.0)
clips = torch.stack([w[i][0] for i in range(0, len(w), 3)])
for f in sys.argv[1:]:
    m = load_motion_prior(PriorConfig(motion_prior=f))
    with torch.no_grad():
        mu, logvar = m._encode_raw(canonical_to_features(clips, 22))
        print(
            f,
            "codes",
            mu.shape,
            "mu std over windows: mean per dim %.3f" % mu.std(0).mean(),
            "posterior sigma mean %.3f" % (0.5 * logvar).exp().mean(),
            "mu mean abs %.3f" % mu.mean(0).abs().mean(),
        )
        for tau in (1.0, 0.5, 0.3):
            z = torch.randn(200, m.config.latent_dim, generator=torch.Generator().manual_seed(0)) * tau
            s = features_to_canonical(m._decode_raw(z))
            j = sequence_joints(s)
            print(f"  tau {tau}: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f}")
