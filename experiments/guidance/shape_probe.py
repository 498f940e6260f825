"""Diagnose the shape stage with the mini guidance: can the image tower see muscle/age in its
renders (linear probe), and does the text side point the right way (text-direction scores)?

The shape stage's own 512 codebook bodies (its cache), rendered and embedded as the stage does;
a ridge probe from image embeddings to each Anny phenotype; each shape prompt's text direction
(prompt - neutral) against the phenotypes; and five one-phenotype pairs of renders saved as PNG
(docs/experiments/guidance-model.md, 2026-12-05 night: muscle and age are decodable from the
renders, the text directions of "muscular" and "old" point at "short and heavy" instead).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/guidance/shape_probe.py [<out dir>, default /tmp/shape_probe]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/shape_probe")
OUT.mkdir(parents=True, exist_ok=True)

from hydra import compose, initialize_config_dir  # noqa: E402

from avatar.config import register_configs  # noqa: E402
from avatar.guidance import build_guidance  # noqa: E402
from avatar.stages.shape import ShapeStage, direction_scores  # noqa: E402

t0 = time.time()
register_configs()
with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    cfg = compose("config", overrides=["stage=shape", "prompt.shape=a muscular person", f"run_dir={OUT / 'run'}"])
print("render", cfg.render.height, cfg.render.width, "topology", cfg.body.topology, "guidance", dict(cfg.guidance))
stage = ShapeStage(cfg)
guidance = build_guidance(cfg.guidance)  # text_reading=snapped (conf/guidance/mini.yaml)
names = list(stage.body.shape_names)
sc = stage.stage_cfg
print("shape names", names, "azimuths", list(sc.azimuths), "framing", sc.framing, "template", sc.template)

# ---- 1. the codebook exactly as the stage builds it (cache if present; never write it) --------
cache = stage.embedding_cache()
path = cache.path(stage.cache_key())
if path.exists():
    shapes, emb, hit, _ = stage.codebook(guidance)
    print("codebook from the stage's cache", path, "hit", hit)
else:
    print("no cache at", path, "- rendering the codebook")
    shapes = stage.sample_codebook()
    emb = stage.embed_shapes(guidance, shapes)
    # check a few renders against a fresh embedding
assert torch.allclose(shapes, stage.sample_codebook()), "cached shapes differ from the stage's draws"
# spot check the cached embeddings against fresh renders
fresh = stage.embed_shapes(guidance, shapes[:4])
print("spot check: max |cached - fresh| =", float((fresh - emb[:4]).abs().max()))
print(f"codebook ready {time.time() - t0:.0f}s")

X = emb.numpy().astype(np.float64)
Y = shapes.numpy().astype(np.float64)
Xb, Yb = X[1:], Y[1:]  # random draws (entry 0 is the neutral body)
neutral_img = emb[0]
results: dict = {"names": names, "n_bodies": len(Xb)}

# ---- 2. linear probe: ridge from image embedding to each phenotype (5-fold CV) ----------------
from sklearn.linear_model import RidgeCV  # noqa: E402
from sklearn.model_selection import KFold, cross_val_predict  # noqa: E402

kf = KFold(5, shuffle=True, random_state=0)
probe = {}
for j, n in enumerate(names):
    model = RidgeCV(alphas=np.logspace(-4, 2, 13))
    pred = cross_val_predict(model, Xb, Yb[:, j], cv=kf)
    r2 = 1 - ((pred - Yb[:, j]) ** 2).sum() / ((Yb[:, j] - Yb[:, j].mean()) ** 2).sum()
    r = np.corrcoef(pred, Yb[:, j])[0, 1]
    probe[n] = {"cv_r2": round(float(r2), 3), "cv_r": round(float(r), 3)}
# probe on residuals: phenotype j predicted from the embedding *and* compared with what the other
# phenotypes already predict (is muscle visible beyond weight etc.?)
from sklearn.linear_model import LinearRegression  # noqa: E402

for j, n in enumerate(names):
    others = np.delete(Yb, j, axis=1)
    base = cross_val_predict(LinearRegression(), others, Yb[:, j], cv=kf)
    r2_base = 1 - ((base - Yb[:, j]) ** 2).sum() / ((Yb[:, j] - Yb[:, j].mean()) ** 2).sum()
    probe[n]["r2_from_other_phenotypes"] = round(float(r2_base), 3)
results["probe"] = probe
print("\nPROBE (ridge, 5-fold CV on", len(Xb), "codebook bodies)")
for n, v in probe.items():
    print(
        f"  {n:12s} R2={v['cv_r2']:+.3f}  r={v['cv_r']:+.3f}   (R2 from the other phenotypes alone {v['r2_from_other_phenotypes']:+.3f})"
    )

# image-side direction of each phenotype: multi-output OLS emb ~ standardised phenotypes
Z = (Yb - Yb.mean(0)) / Yb.std(0)
A = np.c_[np.ones(len(Z)), Z]
coef, *_ = np.linalg.lstsq(A, Xb, rcond=None)  # (7, E)
img_dir = coef[1:]  # per phenotype, embedding change per 1 sd
img_dir_norm = {n: float(np.linalg.norm(img_dir[j])) for j, n in enumerate(names)}
results["image_direction_norm_per_sd"] = {k: round(v, 4) for k, v in img_dir_norm.items()}
print("\n|d emb / d phenotype| per 1 sd (OLS, others held fixed):", {k: round(v, 4) for k, v in img_dir_norm.items()})
# fraction of embedding variance explained by the phenotypes (linear)
resid = Xb - A @ coef
print("embedding variance explained linearly by the 6 phenotypes:", round(1 - resid.var(0).sum() / Xb.var(0).sum(), 3))

# ---- 3. text directions -------------------------------------------------------------------
g_as_written = build_guidance({**dict(cfg.guidance), "text_reading": "as_written"})
prompts = [
    "a muscular person",
    "a muscular man",
    "a muscular woman",
    "an old person",
    "an old man",
    "an old woman",
    "an elderly person",
    "a tall person",
    "a short person",
    "a heavy person",
    "a slim person",
    "a man",
    "a woman",
    "a child",
    "a young person",
    "a strong person",
    "a bodybuilder",
    "a fat person",
    "a thin person",
]
neutral_text = sc.neutral_text
from scipy.stats import pearsonr  # noqa: E402

text_res = {}
for reading, g in (("snapped", guidance), ("as_written", g_as_written)):
    nt = g.encode_text([neutral_text])[0].float().cpu()
    print(f"\nTEXT DIRECTIONS ({reading}); neutral text {neutral_text!r} read as {g.read(neutral_text)!r}")
    for p in prompts:
        text = sc.template.format(p)
        te = g.encode_text([text])[0].float().cpu()
        tdir = F.normalize(te - nt, dim=0)
        s_dir = direction_scores(emb, neutral_img, te, nt).numpy()[1:]  # the stage's score
        s_dot = (emb[1:] @ tdir).numpy()  # plain projection on the text direction
        corr = {n: round(float(pearsonr(s_dir, Yb[:, j])[0]), 3) for j, n in enumerate(names)}
        corr_dot = {n: round(float(pearsonr(s_dot, Yb[:, j])[0]), 3) for j, n in enumerate(names)}
        # standardised regression of the stage score on all phenotypes (confounds separated)
        beta, *_ = np.linalg.lstsq(A, (s_dir - s_dir.mean()) / s_dir.std(), rcond=None)
        beta = {n: round(float(b), 3) for n, b in zip(names, beta[1:])}
        # cosine between the text direction and each phenotype's image direction
        cos_img = {
            n: round(float(np.dot(tdir.numpy(), img_dir[j]) / (np.linalg.norm(img_dir[j]) + 1e-12)), 3)
            for j, n in enumerate(names)
        }
        full = direction_scores(emb, neutral_img, te, nt)
        top = full.topk(10).indices
        top1 = {n: round(float(shapes[top[0], j] - shapes[0, j]), 3) for j, n in enumerate(names)}
        top10 = {n: round(float(shapes[top, j].mean() - shapes[0, j]), 3) for j, n in enumerate(names)}
        text_res.setdefault(reading, {})[p] = {
            "read_as": g.read(text),
            "corr_direction_score": corr,
            "corr_dot": corr_dot,
            "std_beta_direction_score": beta,
            "cos_textdir_imagedir": cos_img,
            "top1_minus_neutral": top1,
            "top10_mean_minus_neutral": top10,
            "text_offset_norm": round(float((te - nt).norm()), 4),
        }
        print(f"  {p!r} -> read {g.read(text)!r}  |t-n|={float((te - nt).norm()):.3f}")
        print(f"     corr(stage score, phenotype): {corr}")
        print(f"     corr(emb.tdir, phenotype):    {corr_dot}")
        print(f"     std beta (all phenotypes):    {beta}")
        print(f"     cos(tdir, image dir):         {cos_img}")
        print(f"     top1 - neutral:               {top1}")
        print(f"     top10 mean - neutral:         {top10}")
results["text"] = text_res

# text-text: where does the "muscular" text direction sit relative to the others?
nt = guidance.encode_text([neutral_text])[0].float().cpu()
dirs = {p: F.normalize(guidance.encode_text([sc.template.format(p)])[0].float().cpu() - nt, dim=0) for p in prompts}
keys = [
    "a muscular person",
    "an old person",
    "a tall person",
    "a short person",
    "a heavy person",
    "a slim person",
    "a man",
    "a woman",
]
M = np.array([[float(dirs[a] @ dirs[b]) for b in keys] for a in keys])
print("\ncos between text directions (snapped):")
print("   " + " ".join(f"{k[2:9]:>8s}" for k in keys))
for k, row in zip(keys, M):
    print(f"{k[2:12]:>10s} " + " ".join(f"{v:+8.2f}" for v in row))
results["text_dir_cos"] = {"keys": keys, "matrix": M.round(3).tolist()}

# ---- 4. pair renders ------------------------------------------------------------------------
neutral = stage.body.default_shape().detach().cpu().float()[0]
pairs = []
for n, lo, hi in (
    ("muscle", 0.1, 0.9),
    ("age", 0.3, 0.95),
    ("age", 0.5, 0.95),
    ("weight", 0.1, 0.9),
    ("height", 0.1, 0.9),
):
    j = names.index(n)
    a, b = neutral.clone(), neutral.clone()
    a[j], b[j] = lo, hi
    pairs.append((f"{n} {lo}->{hi}", a, b))
bodies = torch.stack([x for _, a, b in pairs for x in (a, b)])
verts = stage.pose_vertices(bodies.to(stage.body.device, stage.body.dtype), stage.pose)[0]
imgs = stage.render_bodies(verts, list(sc.azimuths))  # exactly as the codebook (128 px, fit framing)
seen = guidance.preprocess(imgs)  # what the image tower sees: 64 px
pe = guidance.encode_image(imgs).float().cpu()
pair_res = {}
for k, (label, a, b) in enumerate(pairs):
    ea, eb = pe[2 * k], pe[2 * k + 1]
    j = names.index(label.split()[0])
    dd = (eb - ea).numpy()
    cos_dir = float(dd @ img_dir[j] / (np.linalg.norm(dd) * np.linalg.norm(img_dir[j]) + 1e-12))
    tname = {
        "muscle": "a muscular person",
        "age": "an old person",
        "weight": "a heavy person",
        "height": "a tall person",
    }[label.split()[0]]
    ts = float(F.normalize(eb - ea, dim=0) @ dirs[tname])
    pair_res[label] = {
        "emb_dist": round(float((ea - eb).norm()), 4),
        "pixel_mad_64": round(float((seen[2 * k] - seen[2 * k + 1]).abs().mean()), 4),
        "cos(pair diff, OLS image dir)": round(cos_dir, 3),
        f"cos(pair diff, text dir {tname!r})": round(ts, 3),
    }
print("\nPAIRS (neutral body, one phenotype changed):")
for k, v in pair_res.items():
    print(" ", k, v)
results["pairs"] = pair_res

from avatar.export.media import caption_tile, image_grid, save_image, to_uint8  # noqa: E402
from avatar.render import sized_renderer  # noqa: E402

up64 = F.interpolate(seen.clamp(0, 1), scale_factor=4, mode="nearest")  # 64 px shown at 256
big = stage.render_bodies(verts, list(sc.azimuths), renderer=sized_renderer(256, like=cfg.render))
tiles = []
for k, (label, a, b) in enumerate(pairs):
    row = [
        caption_tile(to_uint8(up64[2 * k]), f"{label.split()[0]}={label.split()[1].split('->')[0]} (64px)"),
        caption_tile(to_uint8(up64[2 * k + 1]), f"{label.split()[0]}={label.split()[1].split('->')[1]} (64px)"),
        caption_tile(to_uint8(big[2 * k]), "256px"),
        caption_tile(to_uint8(big[2 * k + 1]), "256px"),
    ]
    tiles += row
    save_image(OUT / f"pair_{label.replace(' ', '_').replace('->', '_to_')}.png", image_grid(row, ncols=4))
save_image(OUT / "pairs_all.png", image_grid(tiles, ncols=4))
(OUT / "results.json").write_text(json.dumps(results, indent=1))
print(f"\ndone {time.time() - t0:.0f}s; wrote {OUT / 'results.json'} and pair PNGs")
