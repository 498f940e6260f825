"""Random backgrounds for rendered views (AvatarCLIP's background augmentation).

AvatarCLIP (hongfz16/AvatarCLIP, ``AvatarGen/AppearanceGen/main.py``, ``Runner.train_clip``,
``use_bg_aug``) picks one of four backgrounds per step with equal probability: white, black,
per-pixel noise, or a blurred checkerboard of ``H // randint(10, 19)``-pixel cells blurred by
``torchvision.transforms.GaussianBlur(kernel_size=(5, 9), sigma=(0.1, 2.0))``. Two deliberate
differences here, both giving richer colour augmentation: AvatarCLIP's noise is grey
``clamp(N(0.5, 0.2))`` and its checkerboard is grey 0.2 / 0.8; here noise is uniform per pixel
and channel, and the checkerboard's two colours are random RGB colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BACKGROUND_KINDS = ("white", "black", "noise", "checkerboard", "random")
_CONCRETE_KINDS = BACKGROUND_KINDS[:4]

CHECKER_CELLS_RANGE = (10, 19)  # cells along the image height (inclusive), as AvatarCLIP
BLUR_KERNEL = (9, 5)  # (rows, columns): torchvision's kernel_size=(5, 9) is (x, y)
BLUR_SIGMA_RANGE = (0.1, 2.0)


def _gaussian_kernels(sigma: Tensor, size: int) -> Tensor:
    """Normalised 1D Gaussian kernels (B, size), one per sigma."""
    x = torch.arange(size, device=sigma.device, dtype=sigma.dtype) - (size - 1) / 2
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel: tuple[int, int] = BLUR_KERNEL) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) images with one sigma per image (reflect padding)."""
    b, c, h, w = images.shape
    ky, kx = kernel
    kernel_y = _gaussian_kernels(sigma, ky).repeat_interleave(c, dim=0)  # (B*C, ky)
    kernel_x = _gaussian_kernels(sigma, kx).repeat_interleave(c, dim=0)
    x = images.reshape(1, b * c, h, w)
    x = F.pad(x, (kx // 2, kx // 2, ky // 2, ky // 2), mode="reflect")
    x = F.conv2d(x, kernel_y[:, None, :, None], groups=b * c)
    x = F.conv2d(x, kernel_x[:, None, None, :], groups=b * c)
    return x.reshape(b, c, h, w)


def _checkerboard(batch: int, height: int, width: int, generator, device, dtype) -> Tensor:
    lo, hi = CHECKER_CELLS_RANGE
    cells = torch.randint(lo, hi + 1, (batch,), generator=generator, device=device)
    cell = (height // cells).clamp_min(1)
    colors = torch.rand(batch, 2, 3, generator=generator, device=device, dtype=dtype)
    sigma = BLUR_SIGMA_RANGE[0] + (BLUR_SIGMA_RANGE[1] - BLUR_SIGMA_RANGE[0]) * torch.rand(
        batch, generator=generator, device=device, dtype=dtype
    )
    rows = torch.arange(height, device=device)[None, :, None] // cell[:, None, None]
    cols = torch.arange(width, device=device)[None, None, :] // cell[:, None, None]
    parity = ((rows + cols) % 2).to(dtype)[:, None]  # (B, 1, H, W)
    board = colors[:, 0, :, None, None] * (1 - parity) + colors[:, 1, :, None, None] * parity
    return gaussian_blur(board, sigma)


def make_background(
    kind: str,
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Backgrounds (B, 3, H, W) in [0, 1] of one of ``BACKGROUND_KINDS``.

    ``"random"`` picks white, black, noise or checkerboard independently per image, uniformly.
    Random kinds draw from ``generator`` (which must live on ``device``; None = torch's global
    generator).
    """
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background kind {kind!r}; valid kinds: {', '.join(BACKGROUND_KINDS)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    shape = (batch, 3, height, width)
    if kind == "white":
        return torch.ones(shape, device=device, dtype=dtype)
    if kind == "black":
        return torch.zeros(shape, device=device, dtype=dtype)
    if kind == "noise":
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    if kind == "checkerboard":
        return _checkerboard(batch, height, width, generator, device, dtype)
    choice = torch.randint(len(_CONCRETE_KINDS), (batch,), generator=generator, device=device)
    out = torch.empty(shape, device=device, dtype=dtype)
    for i, name in enumerate(_CONCRETE_KINDS):
        picked = (choice == i).nonzero().squeeze(1)
        if len(picked):
            out[picked] = make_background(name, len(picked), height, width, generator, device, dtype)
    return out
