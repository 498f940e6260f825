"""An autoregressive prior over the code's time steps (a GRU giving each step's Gaussian), trained on
posterior draws, sampled at temperatures 1 and 0.8.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/ar_prior.py FILE [STRIDE]
"""

import sys
import time

import torch
from torch import nn

from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

torch.set_num_threads(1)
torch.manual_seed(0)
train, test = load_corpus().split()
stride = int(sys.argv[2]) if len(sys.argv) > 2 else 15
clips = feature_statistics_windows(train, 60, stride)  # with mirror images
m = load_motion_prior(PriorConfig(motion_prior=sys.argv[1]))
S, P = m.encoder.length, m.encoder.per_step
with torch.no_grad():
    out = [m._encode_raw(canonical_to_features(c, 22)) for c in clips.split(256)]
mu = torch.cat([o[0] for o in out])
sig = torch.cat([o[1] for o in out]).mul(0.5).exp()
print("codes", mu.shape, flush=True)


class AR(nn.Module):
    def __init__(s, h=256):
        super().__init__()
        s.gru = nn.GRU(P, h, batch_first=True)
        s.start = nn.Parameter(torch.zeros(1, 1, P))
        s.head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 2 * P))

    def params(s, z):  # z (B, S, P) -> mu, logsig for each step given the previous ones
        x = torch.cat([s.start.expand(z.shape[0], 1, P), z[:, :-1]], 1)
        hdn, _ = s.gru(x)
        o = s.head(hdn)
        return o[..., :P], o[..., P:].clamp(-7, 3)

    def nll(s, z):
        mu_, ls = s.params(z)
        return (0.5 * ((z - mu_) / ls.exp()) ** 2 + ls).sum((1, 2)).mean()

    @torch.no_grad()
    def sample(s, n, g, temp=1.0):
        z = torch.zeros(n, S, P)
        h = None
        x = s.start.expand(n, 1, P)
        for t in range(S):
            o, h = s.gru(x, h)
            o = s.head(o)
            mu_, ls = o[..., :P], o[..., P:].clamp(-7, 3)
            zt = mu_ + temp * ls.exp() * torch.randn(mu_.shape, generator=g)
            z[:, t : t + 1] = zt
            x = zt
        return z.reshape(n, S * P)


ar = AR()
opt = torch.optim.Adam(ar.parameters(), 1e-3)
steps = 3000
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
t0 = time.time()
for step in range(1, steps + 1):
    idx = torch.randint(len(mu), (128,))
    z = (mu[idx] + sig[idx] * torch.randn(128, mu.shape[1])).reshape(128, S, P)
    loss = ar.nll(z)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 1000 == 0:
        g = torch.Generator().manual_seed(0)
        for temp in (1.0, 0.8):
            with torch.no_grad():
                s = features_to_canonical(m._decode_raw(ar.sample(200, g, temp)))
                j = sequence_joints(s)
            print(
                f"step {step} nll {loss.item():.1f} temp {temp}: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f} ({time.time() - t0:.0f} s)",
                flush=True,
            )
