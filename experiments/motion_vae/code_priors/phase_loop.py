"""40 windows of one training walk, each a frame later: the principal components of their codes, and
what their mean and a midpoint of two phases decode to (the shipped file).
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/phase_loop.py
"""

import torch

from avatar.mocap.contact import contact_travel_distance
from avatar.priors.data import load_corpus
from avatar.priors.loading import load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import HeadingNormalisedWindows

torch.set_num_threads(2)
train, test = load_corpus().split()
w = HeadingNormalisedWindows(train, 60, stride=1, mirror_prob=0.0)
m = load_motion_prior()
# the first run of 40 consecutive windows (one clip, phases shifting a frame at a time) that all travel >= 0.8 m
run = []
for i in range(0, len(w)):
    c = w[i][0]
    if contact_travel_distance(c) >= 0.8:
        run.append(c)
        if len(run) == 40:
            break
    else:
        run = []
clips = torch.stack(run)
with torch.no_grad():
    mu, _ = m._encode_raw(canonical_to_features(clips, 22))
    x = mu - mu.mean(0)
    sv = torch.linalg.svdvals(x)
    share = sv**2 / (sv**2).sum()
    print(
        "40 phase-shifted windows of one walk: variance share of top 1..4 PCs", [round(float(v), 3) for v in share[:4]]
    )
    print(
        "spread (rms distance to mean) %.2f, mean-code norm from the prior mean %.2f"
        % (x.norm(dim=1).pow(2).mean().sqrt(), (mu.mean(0) - m.code_mean).norm())
    )
    for name, z in (
        ("one window's code", mu[:1]),
        ("mean of the 40 codes", mu.mean(0, keepdim=True)),
        ("halfway between windows 0 and 15", 0.5 * (mu[:1] + mu[15:16])),
    ):
        d = features_to_canonical(m._decode_raw(z))
        print(f"{name}: decoded travel {contact_travel_distance(d[0]):.2f} m")
    print(
        "captured travel of window 0 / 15: %.2f / %.2f"
        % (contact_travel_distance(clips[0]), contact_travel_distance(clips[15]))
    )
