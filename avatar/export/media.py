"""Images, videos and meshes written atomically (temp file + rename)."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import trimesh

from avatar.utils.io import atomic_path


def to_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W, 3) or (3, H, W) float in [0, 1] (or uint8) -> (H, W, 3) uint8."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.transpose(image, (1, 2, 0))
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image


def image_grid(images: list[np.ndarray], ncols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 images row by row."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    h, w, c = images[0].shape
    nrows = -(-len(images) // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = image
    return grid


def caption_tile(tile: np.ndarray, text: str) -> np.ndarray:
    """The tile with a white caption strip below it (a line of text per line of ``text``)."""
    from PIL import Image, ImageDraw

    h, w, _ = tile.shape
    line = max(12, h // 12)
    strip = line * (text.count("\n") + 1)
    canvas = Image.new("RGB", (w, h + strip), (255, 255, 255))
    canvas.paste(Image.fromarray(tile), (0, 0))
    draw = ImageDraw.Draw(canvas)
    try:
        from PIL import ImageFont

        font = ImageFont.load_default(size=max(8, line - 4))
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = None
    draw.text((2, h + 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def save_image(path: str | Path, image: np.ndarray | torch.Tensor) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, to_uint8(image))
    return path


def save_video(path: str | Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """Write an H.264 mp4 (ffmpeg from imageio-ffmpeg; sizes padded to a multiple of 16)."""
    path = Path(path)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    with atomic_path(path) as tmp:
        imageio.mimwrite(tmp, [to_uint8(f) for f in frames], fps=fps, codec="libx264", quality=8, macro_block_size=16)
    return path


def save_mesh(path: str | Path, vertices, faces, vertex_colors=None) -> Path:
    """Write a mesh with optional vertex colours; the format follows the suffix (.ply/.obj/.glb)."""
    path = Path(path)
    as_np = lambda x: x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)  # noqa: E731
    colors = None if vertex_colors is None else to_uint8(as_np(vertex_colors)[None])[0]
    mesh = trimesh.Trimesh(as_np(vertices), as_np(faces), vertex_colors=colors, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp)
    return path
