"""Rendering: cameras and view sampling, backgrounds, and the differentiable mesh renderer."""

from avatar.render.backgrounds import BACKGROUND_KINDS, gaussian_blur, make_background
from avatar.render.cameras import (
    FRONT,
    UP,
    Cameras,
    ViewSamplingConfig,
    framing_cameras,
    look_at,
    orbit_cameras,
    sample_views,
    view_direction,
)
from avatar.render.mesh_renderer import (
    MeshRenderConfig,
    MeshRenderer,
    RenderOutput,
    sized_renderer,
    vertex_normals,
)

__all__ = [
    "BACKGROUND_KINDS",
    "FRONT",
    "UP",
    "Cameras",
    "MeshRenderConfig",
    "MeshRenderer",
    "RenderOutput",
    "ViewSamplingConfig",
    "sized_renderer",
    "framing_cameras",
    "gaussian_blur",
    "look_at",
    "make_background",
    "orbit_cameras",
    "sample_views",
    "vertex_normals",
    "view_direction",
]
