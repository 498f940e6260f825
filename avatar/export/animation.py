"""Videos of a body performing a canonical motion (mocap clips, generated motions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatar.body.base import BodyModel
from avatar.body.regions import region_colors
from avatar.body.skeleton import CanonicalPose
from avatar.export.media import save_video, to_uint8
from avatar.render import MeshRenderer, orbit_cameras


@torch.no_grad()
def posed_vertices(body: BodyModel, poses: CanonicalPose, chunk: int = 64, ground: bool = True) -> torch.Tensor:
    """(T, V, 3) vertices of the body in every pose. ``ground`` shifts the whole clip by one
    height offset so its lowest vertex touches z = 0 (a body's legs differ from the capture
    subject's, so the source's pelvis height alone can leave the feet floating or sunk)."""
    vertices = torch.cat([body(pose=poses[i : i + chunk]).vertices for i in range(0, poses.batch_size, chunk)])
    if ground:
        vertices[..., 2] -= vertices[..., 2].min()
    return vertices


@torch.no_grad()
def render_motion_video(
    body: BodyModel,
    poses: CanonicalPose,
    path: str | Path,
    fps: float,
    renderer: MeshRenderer,
    colors: torch.Tensor | None = None,
    azimuth_deg: float = 30.0,
    distance: float = 3.0,
) -> Path:
    """An mp4 of the body performing ``poses`` (see :func:`render_vertices_video`)."""
    colors = region_colors(body.skinning_weights) if colors is None else colors
    frames = render_vertices_video(posed_vertices(body, poses), body.faces, colors, renderer, azimuth_deg, distance)
    return save_video(path, frames, fps=int(round(fps)))


@torch.no_grad()
def render_vertices_video(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    colors: torch.Tensor,
    renderer: MeshRenderer,
    azimuth_deg: float = 30.0,
    distance: float = 3.0,
    orbit: bool = False,
    elevation_deg: float = 10.0,
    fov_deg: float = 60.0,
) -> list[np.ndarray]:
    """Frames of a mesh sequence (T, V, 3): the camera follows the body's horizontal position
    at a fixed height, so travel (walking) stays visible in the floor-fixed lighting and the
    feet's contact with z = 0 (a grey floor line) can be judged; ``orbit`` also turns it once
    around the body over the clip (a turntable of the moving body)."""
    centre_xy = vertices.mean(1)[:, :2]
    height = 0.5 * (vertices[..., 2].max() + vertices[..., 2].min())
    frames = []
    for t in range(len(vertices)):
        target = torch.tensor([centre_xy[t, 0], centre_xy[t, 1], height])
        azimuth = azimuth_deg + (360.0 * t / len(vertices) if orbit else 0.0)
        cams = orbit_cameras(1, distance, elevation_deg, target, fov_deg, start_azimuth_deg=azimuth)
        rgb = renderer.render(vertices[t], faces, cams, colors=colors).rgb[0]
        frames.append(_draw_floor_line(to_uint8(rgb), renderer, cams, target))
    return frames


def _draw_floor_line(image: np.ndarray, renderer: MeshRenderer, cams, target: torch.Tensor) -> np.ndarray:
    """Mark where the floor (z = 0) passes under the body: a grey line, to judge foot contact."""
    h, w = renderer.cfg.height, renderer.cfg.width
    pix, depth = cams.project(torch.tensor([[target[0], target[1], 0.0]]), h, w)
    row = int(pix[0, 0, 1].round())
    if 0 <= row < h and depth[0, 0] > 0:
        floor = image[row].astype(int)
        image = image.copy()
        image[row] = np.where((floor > 245).all(-1, keepdims=True), 160, floor).astype(np.uint8)
    return image
