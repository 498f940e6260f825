"""Mixtures with many components over the code: the training windows' own posteriors (the
aggregate posterior, a VampPrior whose pseudo-inputs are the training windows) and scikit-learn
diagonal GMMs with hundreds of components, against the full Gaussian the file ships with.
For each: the share of samples travelling >= 0.5 m, APD, median jerk, and how new the samples
are: each clip's distance (root-mean-square joint distance over every 2nd frame, mm, pelvis
at the origin) to its nearest training window at stride 5 (no mirror images), next to the
held-out windows' (unseen subjects) and the training posterior means' (reconstructions:
near-copies) nearest distances.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06, "sampling the aggregate
posterior"); the numbers in that log came from this. Codes are in the encoder's own (raw) space.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/posterior_mixture.py FILE \
        [--samples 400] [--noise 1 0.7] [--gmm 64 256 1024] [--knn 1 5 20]
"""

import argparse
import time

import torch
from sklearn.mixture import GaussianMixture

from avatar.evaluation.priors import clip_statistics, nearest_window_mm, reference_joints
from avatar.priors.data import load_corpus
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import HeadingNormalisedWindows, feature_statistics_windows

parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("--samples", type=int, default=400)
parser.add_argument("--noise", type=float, nargs="*", default=[1.0, 0.7], help="posterior noise scales")
parser.add_argument("--gmm", type=int, nargs="*", default=[64, 256, 1024], help="diagonal GMM sizes")
parser.add_argument(
    "--knn", type=int, nargs="*", default=[], help="interpolate each drawn code towards one of its K nearest"
)
args = parser.parse_args()
torch.set_num_threads(2)
N = args.samples
gen = torch.Generator().manual_seed(0)
train, test = load_corpus().split()
m = load_motion_prior(PriorConfig(motion_prior=args.file))


def windows(corpus, stride):
    w = HeadingNormalisedWindows(corpus, 60, stride=stride, mirror_prob=0.0)
    return torch.stack([w[i][0] for i in range(len(w))])


@torch.no_grad()
def posteriors(clips):
    out = [m._encode_raw(canonical_to_features(c, 22)) for c in clips.split(256)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


@torch.no_grad()
def decode(z):
    return torch.cat([features_to_canonical(m._decode_raw(c)) for c in z.split(256)])


reference = reference_joints(windows(train, 5))


def report(name, clips, t0=None):
    s = clip_statistics(clips)
    extra = f"  ({time.time() - t0:.0f} s)" if t0 else ""
    print(f"{name}: travelling {s['travelling']:.0%} APD {s['apd_mm']:.0f} jerk {s['jerk']:.0f} "
          f"nearest-training {nearest_window_mm(clips, reference):.0f} mm{extra}", flush=True)  # fmt: skip


stat = feature_statistics_windows(train, 60)
held = windows(test, 60)
report(f"held-out windows ({len(held)})", held[torch.randperm(len(held), generator=gen)[:N]])
mu, logvar = posteriors(stat)
pick = torch.randint(len(stat), (N,), generator=gen)
report("training windows (feature-statistics set)", stat[pick])
report("their posterior means (reconstructions)", decode(mu[pick]))

sigma = (0.5 * logvar).exp()
for temp in args.noise:
    z = mu[pick] + temp * sigma[pick] * torch.randn(mu[pick].shape, generator=gen)
    report(f"mixture of the {len(stat)} posteriors, noise x{temp}", decode(z))
shared = sigma.pow(2).mean(0).sqrt()
z = mu[pick] + shared * torch.randn(mu[pick].shape, generator=gen)
report("mixture of posterior means, shared sigma", decode(z))
whitened = (mu - m.code_mean) @ torch.linalg.inv(m.code_scale_tril).T
for k in args.knn:  # latent mixup between neighbours (in the whitened code)
    d = torch.cdist(whitened[pick], whitened)
    d[torch.arange(N), pick] = float("inf")
    near = d.topk(k, largest=False).indices[torch.arange(N), torch.randint(k, (N,), generator=gen)]
    u = torch.rand(N, 1, generator=gen)
    report(f"interpolation towards one of the {k} nearest codes", decode(mu[pick] + u * (mu[near] - mu[pick])))
z = m.code_mean + torch.randn(N, mu.shape[1], generator=gen) @ m.code_scale_tril.T
report("full Gaussian (shipped)", decode(z))

means15 = posteriors(windows(train, 15))[0].double().numpy()
for k in args.gmm:
    t0 = time.time()
    g = GaussianMixture(k, covariance_type="diag", reg_covar=1e-4, random_state=0, max_iter=100).fit(means15)
    z = torch.tensor(g.sample(N)[0], dtype=torch.float32)[torch.randperm(N, generator=gen)]
    report(f"GMM diag k={k} on {len(means15)} stride-15 means", decode(z), t0)
