"""How often the motion VAE's own training data travels >= 0.5 m in 2 s, and how often its
reconstructions of that data do: the ceiling of any prior over this decoder's training codes.
The 2,704 feature-statistics windows (every 60 frames, with mirror images: the clips the code
prior is fitted to) and the 29,990 training items (every 5 frames, with mirror images; every 3rd
counted).
Probe for issue #26 (docs/experiments/motion-priors.md, 2026-12-06, "sampling the aggregate
posterior"); the numbers in that log came from this.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/motion_vae/code_priors/training_share.py FILE
"""

import sys

import torch

from avatar.priors.data import load_corpus
from avatar.priors.loading import PriorConfig, load_motion_prior
from avatar.priors.motion_vae import canonical_to_features, features_to_canonical
from avatar.priors.training import feature_statistics_windows, locomotion_share

torch.set_num_threads(2)
train, _ = load_corpus().split()
windows = feature_statistics_windows(train, 60)
m = load_motion_prior(PriorConfig(motion_prior=sys.argv[1]))
with torch.no_grad():
    rec = torch.cat(
        [features_to_canonical(m.decode(m.encode(canonical_to_features(c, 22))[0])) for c in windows.split(256)]
    )
print(f"feature-statistics windows: {len(windows)}, travelling {locomotion_share(windows):.1%}; "
      f"their reconstructions {locomotion_share(rec):.1%}")  # fmt: skip
items = feature_statistics_windows(train, 60, 5)
print(f"training items (stride 5, mirrored): {len(items)}, travelling {locomotion_share(items[::3]):.1%}")
