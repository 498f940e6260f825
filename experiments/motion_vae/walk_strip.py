"""Side-view stick figures (every 6 frames) of the first held-out window that travels >= 0.8 m:
captured, and encoded/decoded by each motion VAE file given, each with its foot-contact travel
(docs/models/motion_vae.md, "Looked at").

    git show 52b6703:avatar/priors/weights/motion_vae.pt > /tmp/old_motion_vae.pt
    .venv/bin/python experiments/motion_vae/walk_strip.py /tmp/walk_strip.png /tmp/old_motion_vae.pt avatar/priors/weights/motion_vae.pt

With ``--samples N [--seed S]``: instead, N prior draws of each file (``MotionVAE.sample_codes``),
each with its travel.

    .venv/bin/python experiments/motion_vae/walk_strip.py --samples 8 /tmp/samples.png avatar/priors/weights/motion_vae.pt
"""

import argparse

import matplotlib
import torch

from avatar.body.skeleton import PARENTS
from avatar.mocap.contact import contact_travel_distance
from avatar.priors.data import load_corpus, sequence_joints
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import HeadingNormalisedWindows

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("files", nargs="+")
parser.add_argument("--samples", type=int, default=0)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
rows = []
if not args.samples:
    _, test = load_corpus().split()
    w = HeadingNormalisedWindows(test, 60, stride=60, mirror_prob=0.0)
    clip = next(w[i][0] for i in range(len(w)) if contact_travel_distance(w[i][0]) >= 0.8)[None]
    rows.append((f"held-out walk: travel {contact_travel_distance(clip[0]):.2f} m", clip))
for f in args.files:
    m = load_motion_prior(PriorConfig(motion_prior=f))
    c = m.config
    name = f"{c.backbone} d={c.latent_dim}" + (f" ({c.conv_levels} halvings)" if c.backbone == "conv" else "")
    with torch.no_grad():
        if args.samples:
            draws = features_to_canonical(
                m.decode(m.sample_codes(args.samples, torch.Generator().manual_seed(args.seed)))
            )
            rows += [
                (f"{name}, draw {i}: travel {contact_travel_distance(d):.2f} m", d[None]) for i, d in enumerate(draws)
            ]
            continue
        mu, _ = m.encode(canonical_to_features(clip, m.config.num_joints))
        dec = features_to_canonical(m.decode(mu, 60))
    rows.append((f"{name}: travel {contact_travel_distance(dec[0]):.2f} m", dec))
frames = list(range(0, 60, 6))
fig, axes = plt.subplots(len(rows), len(frames), figsize=(2 * len(frames), 3 * len(rows)))
for r, (name, rot) in enumerate(rows):
    j = sequence_joints(rot)[0]
    for c, t in enumerate(frames):
        ax = axes[r, c]
        p = j[t]
        for k, par in enumerate(PARENTS):
            if par >= 0:
                ax.plot([p[k, 1], p[par, 1]], [p[k, 2], p[par, 2]], "k-" if k not in (1, 4, 7, 10) else "r-")
        ax.set_xlim(-0.8, 0.8)
        ax.set_ylim(-1.2, 0.8)
        ax.set_aspect("equal")
        ax.axis("off")
        if c == 0:
            ax.set_title(name, fontsize=9, loc="left")
        else:
            ax.set_title(f"frame {t}", fontsize=8)
plt.tight_layout()
plt.savefig(args.out, dpi=60)
