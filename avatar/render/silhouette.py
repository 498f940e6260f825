"""Gradients that move a silhouette. The ray-cast mesh renderer's visibility is not
differentiable, so its images pass gradients to vertices only through shading; optimising a
shape or a pose from renders also needs the outline to move. ``with_silhouette_gradient`` adds
a soft coverage image's gradient to a render, straight-through (the pixels stay the exact
ray-cast ones)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from avatar.render.cameras import Cameras


def soft_silhouette(vertices: torch.Tensor, cameras: Cameras, hard_alpha: torch.Tensor) -> torch.Tensor:
    """A soft coverage image (B, 1, H, W), differentiable w.r.t. ``vertices`` (B, V, 3).

    The ray-cast renderer's visibility is not differentiable, so renders alone give no gradient
    that moves a silhouette. Here every vertex is splatted bilinearly at its projection, the
    density is blurred (sigma from the mean vertex spacing in pixels) and mapped to coverage
    ``1 - exp(-k * density)`` with ``k`` calibrated so the inside of the hard mask saturates:
    the gradient lives on the silhouette's edge (used straight-through, see ``refine``).
    """
    b, _, h, w = hard_alpha.shape
    pix, depth = cameras.project(vertices, h, w)  # (B, V, 2) as (column, row)
    x, y = pix[..., 0] - 0.5, pix[..., 1] - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()
    density = vertices.new_zeros(b, h * w)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (depth > 0)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
            density = density.scatter_add(1, index, weight * ok)
    density = density.view(b, 1, h, w)
    area = hard_alpha.detach().flatten(1).sum(1).clamp_min(1.0)  # covered pixels per view
    spacing = (area / (vertices.shape[1] / 2)).sqrt()  # ~half the vertices face the camera
    sigma = float(spacing.clamp(1.0, 8.0).max())
    radius = int(math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=vertices.device, dtype=vertices.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(density, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, -1), padding=(0, radius))
    inside = hard_alpha.detach() > 0.5
    level = torch.stack(
        [blurred[i][inside[i]].median() if inside[i].any() else blurred.new_tensor(1.0) for i in range(b)]
    )
    k = 3.0 / level.detach().clamp_min(1e-6)  # median inside -> coverage 0.95
    return 1.0 - torch.exp(-k.view(b, 1, 1, 1) * blurred)


def with_silhouette_gradient(
    rgb: torch.Tensor, alpha: torch.Tensor, vertices: torch.Tensor, cameras: Cameras
) -> torch.Tensor:
    """``rgb`` (B, 3, H, W) unchanged in value, plus the soft silhouette's gradient scaled by the
    contrast between the body and the background (their mean colours inside / outside
    ``alpha``), so moving the outline outwards paints body colour over background."""
    soft = soft_silhouette(vertices, cameras.to(dtype=vertices.dtype), alpha)
    alpha = alpha.detach()
    body_tone = (rgb.detach() * alpha).flatten(2).sum(-1) / alpha.flatten(2).sum(-1).clamp_min(1.0)
    bg_tone = (rgb.detach() * (1 - alpha)).flatten(2).sum(-1) / (1 - alpha).flatten(2).sum(-1).clamp_min(1.0)
    return rgb + (soft - soft.detach()) * (body_tone - bg_tone)[..., None, None]
