"""Image augmentation for guided optimisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crops(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random scale/shift crops resampled to the input size (differentiable), as CLIP-guided
    work does: the guidance model sees each render slightly differently every step, which keeps
    the optimisation from fitting one view's pixels adversarially."""
    b = images.shape[0]
    scale = 0.8 + 0.4 * torch.rand(b, generator=generator)
    shift = 0.15 * (torch.rand(b, 2, generator=generator) - 0.5)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)
