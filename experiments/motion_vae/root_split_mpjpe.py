"""Held-out MPJPE of motion VAE files with and without their root-orientation error: each
held-out 60-frame window encoded (mean) and decoded, then scored as decoded and with the
captured root orientation put back (docs/models/motion_vae.md).

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/root_split_mpjpe.py avatar/priors/weights/motion_vae.pt [other.pt ...]
"""

import sys

import torch

from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import HeadingNormalisedWindows

torch.set_num_threads(1)
_, test = load_corpus().split()
for f in sys.argv[1:]:
    m = load_motion_prior(PriorConfig(motion_prior=f))
    w = HeadingNormalisedWindows(test, 60, stride=60, mirror_prob=0.0)
    clips = torch.stack([w[i][0] for i in range(len(w))])
    dec = []
    with torch.no_grad():
        for c in clips.split(64):
            mu, _ = m.encode(canonical_to_features(c, m.config.num_joints))
            dec.append(features_to_canonical(m.decode(mu, 60)))
    dec = torch.cat(dec)
    full = (sequence_joints(dec) - sequence_joints(clips)).norm(dim=-1).mean() * 1000
    body = dec.clone()
    body[..., 0, :] = clips[..., 0, :]
    bodyonly = (sequence_joints(body) - sequence_joints(clips)).norm(dim=-1).mean() * 1000
    print(f"{f}: MPJPE {full:.1f} mm; with the true root orientation {bodyonly:.1f} mm ({len(clips)} windows)")
