"""Does mini's "muscular"/"old" text direction follow muscle/age on its own training distribution
(SyntheticRenderer images: dressed/textureless Anny, random poses and views)? Compare with the
shape stage's grey A-pose front renders (shape_probe.py; docs/experiments/guidance-model.md,
2026-12-05 night, run with N = 1536).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/guidance/shape_probe_training_renders.py [N] [<out dir>]
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict

from avatar.body.anny_body import PHENOTYPES
from avatar.guidance import build_guidance
from avatar.guidance.synthetic.generator import SyntheticConfig, SyntheticRenderer

N = int(sys.argv[1]) if len(sys.argv) > 1 else 384
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/shape_probe")
OUT.mkdir(parents=True, exist_ok=True)
t0 = time.time()
g = build_guidance({"name": "mini", "text_reading": "snapped"})
gen = SyntheticRenderer(SyntheticConfig())
imgs, attrs = [], []
gen_t = torch.Generator().manual_seed(123)
while len(attrs) < N:
    b = gen.generate(64, gen_t)
    imgs.append(b.images)
    attrs += b.attributes
    print(f"{len(attrs)} samples {time.time() - t0:.0f}s", flush=True)
images = torch.cat(imgs)
emb = torch.cat([g.encode_image(images[i : i + 64]) for i in range(0, len(images), 64)]).float()
Y = np.array([[a["phenotype"][n] for n in PHENOTYPES] for a in attrs])
view = np.array([a["view"] for a in attrs])
tl = np.array([a["textureless"] for a in attrs])
body = np.isin(view, ["body", "back"])  # whole-body views
print("views", {v: int((view == v).sum()) for v in set(view)}, "textureless", int(tl.sum()))
X = emb.numpy().astype(np.float64)
res = {"n": len(attrs), "n_body_views": int(body.sum())}
kf = KFold(5, shuffle=True, random_state=0)
res["probe_body_views"] = {}
for j, n in enumerate(PHENOTYPES):
    p = cross_val_predict(RidgeCV(alphas=np.logspace(-4, 2, 13)), X[body], Y[body, j], cv=kf)
    r2 = 1 - ((p - Y[body, j]) ** 2).sum() / ((Y[body, j] - Y[body, j].mean()) ** 2).sum()
    res["probe_body_views"][n] = round(float(r2), 3)
print("probe R2 (body views, training distribution):", res["probe_body_views"])
tmpl, neutral = "a 3d rendering of {} in unreal engine", "a 3d rendering of a person in unreal engine"
nt = g.encode_text([neutral])[0].float()
Z = (Y - Y.mean(0)) / Y.std(0)
res["text"] = {}
for p in [
    "a muscular person",
    "an old person",
    "a tall person",
    "a heavy person",
    "a slim person",
    "a short person",
    "a woman",
    "a man",
]:
    te = g.encode_text([tmpl.format(p)])[0].float()
    tdir = F.normalize(te - nt, dim=0)
    row = {}
    for name, m in (("body_views", body), ("body_views_textureless", body & tl), ("body_views_dressed", body & ~tl)):
        s = (emb[torch.from_numpy(m)] @ tdir).numpy()
        A = np.c_[np.ones(m.sum()), Z[m]]
        beta = np.linalg.lstsq(A, (s - s.mean()) / s.std(), rcond=None)[0][1:]
        corr = [float(np.corrcoef(s, Y[m, j])[0, 1]) for j in range(6)]
        row[name] = {
            "n": int(m.sum()),
            "corr": dict(zip(PHENOTYPES, np.round(corr, 3).tolist())),
            "std_beta": dict(zip(PHENOTYPES, np.round(beta, 3).tolist())),
        }
    res["text"][p] = row
    print(f"\n{p!r}:")
    for k, v in row.items():
        print(f"   {k:24s} n={v['n']:3d} corr {v['corr']}\n   {'':24s}       beta {v['std_beta']}")
(OUT / "results_training_dist.json").write_text(json.dumps(res, indent=1))
print(f"done {time.time() - t0:.0f}s")
