"""A RealNVP flow (12 affine couplings) over the code, trained on posterior draws with their noise
scaled by NOISE (1: the aggregate posterior; 0.1: near the means).
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/flow_prior.py STEPS NOISE
"""

import sys
import time

import torch
from torch import nn

from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

torch.set_num_threads(2)
torch.manual_seed(0)
train, test = load_corpus().split()
clips = feature_statistics_windows(train, 60, 5)  # with mirror images
m = load_motion_prior()
D = m.config.latent_dim
with torch.no_grad():
    out = [m._encode_raw(canonical_to_features(c, 22)) for c in clips.split(256)]
mu = torch.cat([o[0] for o in out])
sig = torch.cat([o[1] for o in out]).mul(0.5).exp()
mean, std = mu.mean(0), (mu.var(0) + float(sys.argv[2]) ** 2 * sig.pow(2).mean(0)).sqrt()
print("codes", mu.shape, flush=True)


class Coupling(nn.Module):
    def __init__(s, mask, h=512):
        super().__init__()
        s.register_buffer("mask", mask)
        s.net = nn.Sequential(nn.Linear(D, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 2 * D))
        nn.init.zeros_(s.net[-1].weight)
        nn.init.zeros_(s.net[-1].bias)

    def forward(s, x):  # x -> y, logdet
        st = s.net(x * s.mask)
        sc, tr = st.chunk(2, -1)
        sc = torch.tanh(sc) * (1 - s.mask)
        tr = tr * (1 - s.mask)
        return x * sc.exp() + tr, sc.sum(-1)

    def inverse(s, y):
        st = s.net(y * s.mask)
        sc, tr = st.chunk(2, -1)
        sc = torch.tanh(sc) * (1 - s.mask)
        tr = tr * (1 - s.mask)
        return (y - tr) * (-sc).exp()


g = torch.Generator().manual_seed(0)
masks = []
for k in range(12):
    masks.append((torch.rand(D, generator=g) < 0.5).float())
flow = nn.ModuleList(Coupling(mk) for mk in masks)


def to_eps(z):  # data -> base, with log-det
    x = (z - mean) / std
    ld = torch.zeros(z.shape[0])
    for c in flow:
        x, l = c(x)
        ld = ld + l
    return x, ld


def from_eps(e):
    x = e
    for c in reversed(flow):
        x = c.inverse(x)
    return x * std + mean


opt = torch.optim.Adam(flow.parameters(), 5e-4)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
t0 = time.time()
for step in range(1, steps + 1):
    idx = torch.randint(len(mu), (256,))
    z = mu[idx] + float(sys.argv[2]) * sig[idx] * torch.randn(256, D)
    e, ld = to_eps(z)
    nll = (0.5 * e.pow(2).sum(-1) - ld).mean() / D
    opt.zero_grad()
    nll.backward()
    torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
    opt.step()
    sched.step()
    if step % 1000 == 0:
        with torch.no_grad():
            for temp in (1.0, 0.8):
                s = features_to_canonical(
                    m._decode_raw(from_eps(temp * torch.randn(200, D, generator=torch.Generator().manual_seed(0))))
                )
                j = sequence_joints(s)
                print(
                    f"flow step {step} nll/dim {nll.item():.3f} temp {temp}: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f} ({time.time() - t0:.0f} s)",
                    flush=True,
                )
