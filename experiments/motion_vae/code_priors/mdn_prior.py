"""The same GRU prior with K-Gaussian mixture conditionals.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06: why prior samples rarely
walk); the numbers in that log came from these. Codes are in the encoder's own
(raw) space, so the shipped file gives the numbers of the file before its prior was fitted.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/mdn_prior.py FILE K

The longer run of 2026-12-06 (later), with the samples' distance to the nearest training window:

    OMP_NUM_THREADS=1 .venv/bin/python experiments/motion_vae/code_priors/mdn_prior.py FILE 16 \
        --steps 12000 --hidden 512 --stride 5 --batch 256 --samples 400 --threads 1 --novelty
"""

import argparse
import math
import time

import torch
from torch import nn

from avatar.evaluation.priors import apd_mm, median_jerk, nearest_window_mm, reference_joints
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("K", type=int)
parser.add_argument("--steps", type=int, default=3000)
parser.add_argument("--hidden", type=int, default=256)
parser.add_argument("--stride", type=int, default=15)
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--samples", type=int, default=200)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--novelty", action="store_true", help="also the distance to the nearest training window")
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
train, test = load_corpus().split()
clips = feature_statistics_windows(train, 60, args.stride)  # with mirror images
m = load_motion_prior(PriorConfig(motion_prior=args.file))
S, P = m.encoder.length, m.encoder.per_step
K = args.K
reference = reference_joints(feature_statistics_windows(train, 60, 10)) if args.novelty else None
with torch.no_grad():
    out = [m._encode_raw(canonical_to_features(c, 22)) for c in clips.split(256)]
mu = torch.cat([o[0] for o in out])
sig = torch.cat([o[1] for o in out]).mul(0.5).exp()


class MDN(nn.Module):
    def __init__(s, h=args.hidden):
        super().__init__()
        s.gru = nn.GRU(P, h, batch_first=True)
        s.start = nn.Parameter(torch.zeros(1, 1, P))
        s.head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, K * (2 * P + 1)))

    def split(s, o):
        o = o.reshape(*o.shape[:-1], K, 2 * P + 1)
        return o[..., :P], o[..., P : 2 * P].clamp(-7, 3), o[..., -1].log_softmax(-1)

    def nll(s, z):
        x = torch.cat([s.start.expand(z.shape[0], 1, P), z[:, :-1]], 1)
        h, _ = s.gru(x)
        mu_, ls, lw = s.split(s.head(h))
        lp = (-0.5 * ((z[..., None, :] - mu_) / ls.exp()) ** 2 - ls - 0.5 * math.log(2 * math.pi)).sum(-1) + lw
        return -lp.logsumexp(-1).sum(-1).mean()

    @torch.no_grad()
    def sample(s, n, g):
        z = torch.zeros(n, S, P)
        h = None
        x = s.start.expand(n, 1, P)
        for t in range(S):
            o, h = s.gru(x, h)
            mu_, ls, lw = s.split(s.head(o))
            k = torch.multinomial(lw[:, 0].exp(), 1, generator=g)[:, 0]
            mk, sk = mu_[torch.arange(n), 0, k], ls[torch.arange(n), 0, k].exp()
            zt = (mk + sk * torch.randn(mk.shape, generator=g))[:, None]
            z[:, t : t + 1] = zt
            x = zt
        return z.reshape(n, S * P)


ar = MDN()
opt = torch.optim.Adam(ar.parameters(), 1e-3)
steps = args.steps
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
t0 = time.time()
for step in range(1, steps + 1):
    idx = torch.randint(len(mu), (args.batch,))
    z = (mu[idx] + sig[idx] * torch.randn(args.batch, mu.shape[1])).reshape(args.batch, S, P)
    loss = ar.nll(z)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 1500 == 0:
        with torch.no_grad():
            s = features_to_canonical(m._decode_raw(ar.sample(args.samples, torch.Generator().manual_seed(0))))
            j = sequence_joints(s)
        novelty = f" nearest training window {nearest_window_mm(s, reference):.0f} mm" if reference is not None else ""
        print(
            f"K={K} step {step} nll {loss.item():.1f}: travelling {locomotion_share(s):.0%} APD {apd_mm(j):.0f} jerk {median_jerk(j):.0f}{novelty} ({time.time() - t0:.0f} s)",
            flush=True,
        )
