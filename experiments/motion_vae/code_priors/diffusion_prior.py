"""A diffusion model over the motion VAE's code (as MLD, Chen et al. 2023, "Executing your
Commands via Motion Diffusion in Latent Space", puts one in a motion VAE's latent space): an MLP
denoiser with residual blocks, trained on posterior draws of the 29,990 training items (every 5
frames, with mirror images) in the whitened code; cosine noise schedule; the denoiser predicts
the noise or the clean code (``--predict``). Every ``--eval-every`` steps it is sampled with DDIM
(predicted clean code clamped) and with ancestral DDPM, and reports the share of samples
travelling >= 0.5 m, APD, median jerk and the distance to the nearest training window.
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06, "sampling the aggregate
posterior"); the numbers in that log came from these runs:

    OMP_NUM_THREADS=1 .venv/bin/python experiments/motion_vae/code_priors/diffusion_prior.py FILE \
        --steps 16000 --eval-every 4000 --ddim-steps 100 --predict eps --threads 1 [--save OUT.pt]
    (the same with --predict x0; and --steps 6000 --threads 2, evaluated with --load OUT.pt)
"""

import argparse
import math
import time

import torch
from torch import nn

from avatar.evaluation.priors import clip_statistics, nearest_window_mm, reference_joints
from avatar.priors.data import load_corpus
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows

parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("--steps", type=int, default=6000)
parser.add_argument("--width", type=int, default=768)
parser.add_argument("--blocks", type=int, default=4)
parser.add_argument("--batch", type=int, default=256)
parser.add_argument("--lr", type=float, default=5e-4)
parser.add_argument("--samples", type=int, default=400)
parser.add_argument("--eval-every", type=int, default=2000)
parser.add_argument("--ddim-steps", type=int, default=50)
parser.add_argument("--save", default="")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--load", default="", help="evaluate a saved denoiser instead of training one")
parser.add_argument("--predict", choices=["eps", "x0"], default="eps", help="what the denoiser predicts")
parser.add_argument("--clip", type=float, default=4.0, help="DDIM: clamp the predicted clean code to +-clip")
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

train, _ = load_corpus().split()
m = load_motion_prior(PriorConfig(motion_prior=args.file))
items = feature_statistics_windows(train, 60, 5)
with torch.no_grad():
    out = [m._encode_raw(canonical_to_features(c, 22)) for c in items.split(512)]
raw_mu, raw_sigma = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out]).mul(0.5).exp()
whiten = torch.linalg.inv(m.code_scale_tril)  # public code = (raw - mean) L^-T
reference = reference_joints(feature_statistics_windows(train, 60, 10))
D = raw_mu.shape[1]
print(f"training codes (whitened means): median norm {((raw_mu - m.code_mean) @ whiten.T).norm(dim=1).median():.1f}")
T = 1000
s_ = 0.008
t_grid = torch.arange(T + 1, dtype=torch.float64) / T
alpha_bar = torch.cos((t_grid + s_) / (1 + s_) * math.pi / 2) ** 2
alpha_bar = (alpha_bar / alpha_bar[0]).clamp(1e-5, 1).float()[1:]  # (T,): t = 1..T


def time_embedding(t: torch.Tensor, dim: int = 128) -> torch.Tensor:
    freqs = torch.exp(-math.log(10000) * torch.arange(dim // 2) / (dim // 2))
    a = t.float()[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], -1)


class Block(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.norm, self.lin, self.time = nn.LayerNorm(w), nn.Linear(w, w), nn.Linear(w, w)

    def forward(self, h, e):
        return h + self.lin(nn.functional.silu(self.norm(h) + self.time(e)))


class Denoiser(nn.Module):
    def __init__(self, w, blocks):
        super().__init__()
        self.inp = nn.Linear(D, w)
        self.temb = nn.Sequential(nn.Linear(128, w), nn.SiLU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList(Block(w) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, D))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x, t):
        e, h = self.temb(time_embedding(t)), self.inp(x)
        for b in self.blocks:
            h = b(h, e)
        return self.out(h)


@torch.no_grad()
def ddim(net, n, steps, g, eta=0.0):
    """DDIM (eta 0) or, with eta 1 and steps = T, ancestral DDPM sampling."""
    ts = torch.linspace(T - 1, 0, steps).round().long()
    x = torch.randn(n, D, generator=g)
    for i, t in enumerate(ts):
        ab = alpha_bar[t]
        x0 = predict_x0(net, x, t.expand(n)).clamp(-args.clip, args.clip)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        ab_prev = alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp_min(0).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
        x = x + sigma * torch.randn(n, D, generator=g)
    return x


def predict_x0(net, x, t):
    out = net(x, t)
    if args.predict == "x0":
        return out
    ab = alpha_bar[t][:, None]
    return (x - (1 - ab).sqrt() * out) / ab.sqrt()


def evaluate(net, step, t0, steps=None, eta=0.0):
    net.eval()
    z = ddim(net, args.samples, steps or args.ddim_steps, torch.Generator().manual_seed(1), eta)
    print(f"code norm: samples {z.norm(dim=1).median():.1f}, N(0, I) {D**0.5:.1f}", flush=True)
    with torch.no_grad():
        clips = torch.cat([features_to_canonical(m.decode(c)) for c in z.split(256)])
    s = clip_statistics(clips)
    print(f"step {step}: travelling {s['travelling']:.0%} APD {s['apd_mm']:.0f} jerk {s['jerk']:.0f} "
          f"nearest-training {nearest_window_mm(clips, reference):.0f} mm ({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    net.train()


net = Denoiser(args.width, args.blocks)
if args.load:
    net.load_state_dict(torch.load(args.load, weights_only=True))
    for steps, eta in ((args.ddim_steps, 0.0), (T, 1.0)):
        print(f"{steps} steps, eta {eta}:", flush=True)
        evaluate(net, 0, time.time(), steps, eta)
    raise SystemExit
print(f"{len(items)} items, denoiser {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters", flush=True)
opt = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999))
t0, running = time.time(), 0.0
for step in range(1, args.steps + 1):
    idx = torch.randint(len(raw_mu), (args.batch,))
    raw = raw_mu[idx] + raw_sigma[idx] * torch.randn(args.batch, D)
    x0 = (raw - m.code_mean) @ whiten.T
    t = torch.randint(T, (args.batch,))
    eps = torch.randn_like(x0)
    ab = alpha_bar[t][:, None]
    target = eps if args.predict == "eps" else x0
    loss = ((net(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t) - target) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    ema.update_parameters(net)
    running = 0.99 * running + 0.01 * loss.item()
    if step % 500 == 0:
        print(f"step {step} loss {running:.4f} ({time.time() - t0:.0f} s)", flush=True)
    if step % args.eval_every == 0 or step == args.steps:
        evaluate(ema.module, step, t0)
        evaluate(ema.module, step, t0, T, 1.0)
if args.save:
    torch.save(ema.module.state_dict(), args.save)
