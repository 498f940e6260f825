"""How good is a guidance model at guiding? Retrieval, binding, and the real test: optimising a
body's colours for a prompt (the check of issue 6 / GUIDANCE-FINDINGS.md).

The colour field is low-frequency on purpose: colours are a sigmoid of a linear map of the
body's smoothest mesh-Laplacian eigenvectors, and every step renders several augmented views,
which is what the prototype needed to avoid adversarial patchworks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy.sparse.csgraph import connected_components

from avatar.body.base import BodyModel
from avatar.body.regions import REGIONS, vertex_regions
from avatar.guidance.augment import random_crops
from avatar.guidance.base import Guidance
from avatar.guidance.synthetic.appearance import COLORS
from avatar.guidance.synthetic.captions import with_article
from avatar.render import MeshRenderConfig, MeshRenderer, ViewSamplingConfig, make_background, sample_views


def laplacian_basis(vertices: torch.Tensor, faces: torch.Tensor, k: int = 12) -> torch.Tensor:
    """Smoothest eigenvectors of the mesh's uniform graph Laplacian, scaled to unit RMS per vertex
    so that a colour field's step size does not depend on the mesh's resolution (full Anny has 22x
    the low-poly body's vertices). A mesh of c connected components (full Anny: body, mouth, two
    eyes) gets k + c - 1 vectors: its null space spends one vector per component on a constant, and
    k - 1 varying modes remain for the body."""
    n = vertices.shape[0]
    f = faces.cpu().numpy()
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    adjacency = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    components, _ = connected_components(adjacency, directed=False)
    laplacian = sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency
    _, vectors = spla.eigsh(laplacian + 1e-6 * sp.eye(n), k=k + components - 1, sigma=-1e-3, which="LM")
    return torch.from_numpy(vectors * np.sqrt(n)).float()


@dataclass
class ColorFitResult:
    colors: torch.Tensor  # (V, 3) final vertex colours
    region_means: dict[str, tuple[float, float, float]]  # mean RGB per body region
    losses: list[float]


def optimise_body_colors(
    guidance: Guidance, body: BodyModel, prompt: str, steps: int = 300, views: int = 8, basis: int = 12,
    lr: float = 0.1, size: int = 128, seed: int = 0,
) -> ColorFitResult:  # fmt: skip
    """Optimise the rest-pose body's colour field so renders match ``prompt`` under ``guidance``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    out = body()
    vertices = out.vertices[0].detach().float()
    eig = laplacian_basis(vertices, body.faces, basis)
    weights = torch.zeros(eig.shape[1], 3, requires_grad=True)
    bias = torch.zeros(3, requires_grad=True)
    optimiser = torch.optim.Adam([weights, bias], lr=lr)
    renderer = MeshRenderer(MeshRenderConfig(height=size, width=size))
    centre = 0.5 * (vertices.amax(0) + vertices.amin(0))
    sampling = ViewSamplingConfig(polar_std_deg=45.0, distance_range=(2.0, 2.6))
    kinds = ("white", "black", "noise", "checkerboard")
    rng = random.Random(seed)
    losses = []
    for step in range(steps):
        colors = torch.sigmoid(eig @ weights + bias)
        cams, info = sample_views(views, sampling, g, centre)
        background = make_background(rng.choice(kinds), views, size, size, g)
        rgb = renderer.render(vertices, body.faces, cams, colors=colors, background=background,
                              light_dir=info["light_dir"], ambient=0.3 + info["ambient"]).rgb  # fmt: skip
        loss = guidance.guidance_loss(random_crops(rgb, g), prompt).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        colors = torch.sigmoid(eig @ weights + bias)
        regions = vertex_regions(body.skinning_weights)
        means = {r: tuple(colors[regions == i].mean(0).tolist()) for i, r in enumerate(REGIONS) if (regions == i).any()}
    return ColorFitResult(colors, means, losses)


def color_pair_right(region_means: dict, top: str, bottom: str) -> bool:
    """Did a colour fit for "a <top> shirt and <bottom> trousers" come out right? The torso's mean
    RGB nearer ``top``'s vocabulary RGB than ``bottom``'s, and the legs' the other way round."""

    def nearer(rgb, wanted, other):
        rgb = np.asarray(rgb)
        return np.linalg.norm(rgb - COLORS[wanted]) < np.linalg.norm(rgb - COLORS[other])

    return bool(nearer(region_means["torso"], top, bottom) and nearer(region_means["legs"], bottom, top))


@dataclass
class ColorCheckResult:
    prompt: str
    right: list[bool]  # per seed
    torso: list[tuple[float, float, float]]  # per seed
    legs: list[tuple[float, float, float]]
    colors: list[torch.Tensor]  # per seed, (V, 3) vertex colours: what the fit looks like


def color_check(
    guidance: Guidance, body: BodyModel, top: str, bottom: str, seeds: int = 5, **fit_options
) -> ColorCheckResult:
    """The colour check over several seeds (views, backgrounds and crops differ per seed): one
    seed is not a measurement, a fit can land either way depending on its views."""
    prompt = f"a person in {with_article(top)} shirt and {bottom} trousers"
    result = ColorCheckResult(prompt, [], [], [], [])
    for seed in range(seeds):
        fit = optimise_body_colors(guidance, body, prompt, seed=seed, **fit_options)
        result.right.append(color_pair_right(fit.region_means, top, bottom))
        result.torso.append(fit.region_means["torso"])
        result.legs.append(fit.region_means["legs"])
        result.colors.append(fit.colors)
    return result


@torch.no_grad()
def retrieval_and_binding(
    guidance: Guidance,
    images: torch.Tensor,
    captions: list[str],
    swapped: list[str | None],
    group: int = 32,
    pose_changed: list[str | None] | None = None,
) -> dict:
    """Top-1 text->image and image->text retrieval in groups of ``group``, binding accuracy (an
    image's caption scores above the same caption with two regions' colours swapped) and, given
    ``pose_changed``, pose accuracy (above the caption with a pose word changed). Also
    ``binding_wins`` / ``pose_wins``: the per-image verdicts, in order, for images with a negative."""
    image = guidance.encode_image(images)
    text = guidance.encode_text(captions)
    t2i, i2t = [], []
    for s in range(0, len(image) - group + 1, group):
        sim = text[s : s + group] @ image[s : s + group].T
        caps = captions[s : s + group]
        t2i += [caps[int(j)] == caps[k] for k, j in enumerate(sim.argmax(1))]
        i2t += [caps[int(j)] == caps[k] for k, j in enumerate(sim.argmax(0))]
    out = {
        "text_to_image_top1": float(np.mean(t2i)) if t2i else float("nan"),
        "image_to_text_top1": float(np.mean(i2t)) if i2t else float("nan"),
    }
    for name, negatives in (("binding", swapped), ("pose", pose_changed)):
        if negatives is None:
            continue
        wins = _hard_negative_wins(guidance, image, text, negatives)
        out[f"{name}_accuracy"] = float(np.mean(wins)) if wins else float("nan")
        out[f"{name}_pairs"] = len(wins)
        out[f"{name}_wins"] = wins
    return out


def _hard_negative_wins(
    guidance: Guidance, image: torch.Tensor, text: torch.Tensor, negatives: list[str | None]
) -> list[bool]:
    """Per image with a negative: does its caption score above the negative?"""
    pairs = [(i, t) for i, t in enumerate(negatives) if t]
    if not pairs:
        return []
    neg = guidance.encode_text([t for _, t in pairs])
    return [float(image[i] @ text[i]) > float(image[i] @ n) for (i, _), n in zip(pairs, neg)]
