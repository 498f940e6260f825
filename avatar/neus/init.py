"""Initialise the NeuS fields from a mesh: regress the SDF and both colour heads to it.

AvatarCLIP initialises its NeuS by rendering the coarse SMPL body from many views and fitting
the NeuS to those images (thousands of steps, the slow part of its appearance stage). Here the
body mesh is known, so the fields are fitted to it directly: the SDF network regresses the
exact mesh signed distance (:func:`mesh_signed_distance`) at points sampled near the surface
(a few Gaussian noise scales) and uniformly in the unit sphere, with the eikonal term keeping
``|grad| = 1``; both colour heads regress the colour of the closest surface point, so head
``b`` (the exported texture) also starts from the coarse look. It is exact, needs no
rendering, and takes seconds to a minute on a CPU.

The mesh must already be in the fields' object space (inside the unit sphere).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar.neus.fields import NeusFields
from avatar.neus.mesh_sdf import MeshQuery

NOISE_SCALES = (0.004, 0.02, 0.08)  # object-space std of the near-surface point clouds
UNIFORM_FRACTION = 0.125  # share of uniform points in the unit sphere
EIKONAL_WEIGHT = 0.1
COLOR_WEIGHT = 1.0
DEFAULT_GREY = 0.7


def sample_surface(
    vertices: Tensor, faces: Tensor, n: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` area-uniform points on the mesh: positions (n, 3), face index (n,), barycentric
    weights (n, 3) of the face's corners. Drawn on ``generator``'s device, returned there."""
    gdev = generator.device
    v = vertices.detach().to(gdev, torch.float32)
    f = faces.to(gdev)
    tri = v[f]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    r = torch.rand(n, 2, generator=generator, device=gdev)
    s = r[:, 0].sqrt()
    bary = torch.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], dim=-1)
    return (bary[:, :, None] * tri[face]).sum(1), face, bary


def _uniform_ball(n: int, generator: torch.Generator) -> Tensor:
    gdev = generator.device
    d = F.normalize(torch.randn(n, 3, generator=generator, device=gdev), dim=-1)
    return d * torch.rand(n, 1, generator=generator, device=gdev).pow(1.0 / 3.0)


def _interpolate(values: Tensor, faces: Tensor, face: Tensor, bary: Tensor) -> Tensor:
    return (bary[:, :, None] * values[faces[face]]).sum(1)


@torch.no_grad()
def evaluate_fit(
    fields: NeusFields,
    vertices: Tensor,
    faces: Tensor,
    vertex_colors: Tensor | None,
    generator: torch.Generator,
    n_points: int = 20000,
) -> dict[str, float]:
    """Held-out errors of a fit: ``sdf_error_surface`` = mean |sdf| at points on the mesh (how
    far, to first order, the zero level set is from the mesh), ``sdf_error_near`` = mean
    |sdf - mesh sdf| within ~2 cm of the surface (std 0.02), ``color_error_a``/``_b`` = mean
    absolute colour error of the heads on the surface (seen along the inward normal)."""
    device = next(fields.parameters()).device
    pts, face, bary = sample_surface(vertices, faces, n_points, generator)
    near = pts + 0.02 * torch.randn(pts.shape, generator=generator, device=pts.device)
    pts, near, face, bary = pts.to(device), near.to(device), face.to(device), bary.to(device)
    verts, faces_d = vertices.to(device, torch.float32), faces.to(device)
    target_near = MeshQuery(verts, faces_d).query(near)[0]
    sdf_surface = torch.cat([fields.sdf(p) for p in pts.split(65536)])
    sdf_near = torch.cat([fields.sdf(p) for p in near.split(65536)])
    colors = _vertex_colors(vertex_colors, len(verts), device)
    target_col = _interpolate(colors, faces_d, face, bary)
    sdf, feat, grad = fields.sdf_features_gradient(pts, create_graph=False)
    col_a, col_b = fields.colors(pts, grad, -F.normalize(grad, dim=-1), feat)
    return {
        "sdf_error_surface": sdf_surface.abs().mean().item(),
        "sdf_error_near": (sdf_near - target_near).abs().mean().item(),
        "color_error_a": (col_a - target_col).abs().mean().item(),
        "color_error_b": (col_b - target_col).abs().mean().item(),
    }


def _vertex_colors(vertex_colors: Tensor | None, n_verts: int, device) -> Tensor:
    if vertex_colors is None:
        return torch.full((n_verts, 3), DEFAULT_GREY, device=device)
    if vertex_colors.shape != (n_verts, 3):
        raise ValueError(f"vertex_colors must be ({n_verts}, 3), got {tuple(vertex_colors.shape)}")
    return vertex_colors.detach().to(device, torch.float32)


def fit_fields_to_mesh(
    fields: NeusFields,
    vertices: Tensor,
    faces: Tensor,
    vertex_colors: Tensor | None = None,
    steps: int = 1000,
    batch_points: int = 8192,
    lr: float = 2e-3,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Fit ``fields`` (in place) to the mesh ``vertices`` (V, 3) / ``faces`` (F, 3) in object
    space, with per-vertex ``vertex_colors`` (V, 3) in [0, 1] (None: grey 0.7).

    Each step draws ``batch_points`` points from ``generator`` (deterministic for a given
    generator state and thread count): near-surface points at the ``NOISE_SCALES`` and
    ``UNIFORM_FRACTION`` uniform points in the unit sphere. Loss = L1(sdf, mesh sdf) +
    0.1 * eikonal + L1 of both colour heads against the closest surface point's colour (at the
    points of the two finer noise scales, seen from random directions, so the colours come out
    view-independent; normals fed to the colour net are detached so colour does not bend the
    geometry). Adam with a cosine learning-rate decay to 5% of ``lr``.

    Returns the final training losses, the held-out :func:`evaluate_fit` errors, ``steps`` and
    ``seconds``.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    device = next(fields.parameters()).device
    verts = vertices.detach().to(device, torch.float32)
    faces_d = faces.detach().to(device, torch.int64)
    colors = _vertex_colors(vertex_colors, len(verts), device)
    if verts.norm(dim=-1).max() > 1.0:
        raise ValueError("the mesh must lie inside the unit sphere (object space): normalise it first")
    mesh = MeshQuery(verts, faces_d)

    n_uniform = int(round(batch_points * UNIFORM_FRACTION))
    n_near = batch_points - n_uniform
    per_scale = [n_near // len(NOISE_SCALES)] * len(NOISE_SCALES)
    per_scale[0] += n_near - sum(per_scale)
    n_color = sum(per_scale[:2])

    opt = torch.optim.Adam(fields.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0)))
    )
    fields.train()
    start = time.perf_counter()
    losses = {"loss_sdf": float("nan"), "loss_eikonal": float("nan"), "loss_color": float("nan")}
    for _ in range(steps):
        surf, face, bary = sample_surface(verts, faces_d, n_near, generator)
        noise = torch.cat([torch.full((k, 1), s) for k, s in zip(per_scale, NOISE_SCALES)]).to(surf.device)
        near = surf + noise * torch.randn(surf.shape, generator=generator, device=surf.device)
        pts = torch.cat([near, _uniform_ball(n_uniform, generator)]).to(device)
        view = F.normalize(torch.randn(n_color, 3, generator=generator, device=generator.device), dim=-1).to(device)
        target, _, c_face, c_bary = mesh.query(pts)
        target_col = _interpolate(colors, faces_d, c_face[:n_color], c_bary[:n_color])

        sdf, feat, grad = fields.sdf_features_gradient(pts, create_graph=True)
        loss_sdf = (sdf - target).abs().mean()
        loss_eik = ((grad.norm(dim=-1) - 1.0) ** 2).mean()
        col_a, col_b = fields.colors(pts[:n_color], grad[:n_color].detach(), view, feat[:n_color])
        loss_col = (col_a - target_col).abs().mean() + (col_b - target_col).abs().mean()
        loss = loss_sdf + EIKONAL_WEIGHT * loss_eik + COLOR_WEIGHT * loss_col
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses = {"loss_sdf": loss_sdf.item(), "loss_eikonal": loss_eik.item(), "loss_color": loss_col.item()}
    seconds = time.perf_counter() - start
    metrics = evaluate_fit(fields, verts, faces_d, vertex_colors, generator)
    return {**losses, **metrics, "steps": float(steps), "seconds": seconds}
