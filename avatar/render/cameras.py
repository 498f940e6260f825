"""Pinhole cameras, turntables and AvatarCLIP's random view sampling.

World convention (the project's, Anny's): metres, Z-up, the body faces -Y, so the body's left
is +X. Cameras follow OpenGL: in camera space the camera looks along -Z, +Y is image-up and +X
is image-right. ``c2w`` holds the camera's axes as columns (x, y, z) and its position.

Angles of a viewing direction (the unit vector from the look-at target to the camera):

* ``azimuth_deg`` about +Z, 0 = camera on the -Y side (it sees the FRONT of a body facing -Y),
  increasing counter-clockwise seen from above, so 90 puts the camera on the body's left (+X)
  and 180 behind it (+Y);
* ``elevation_deg`` above the horizontal plane (90 = looking straight down).

    direction = (sin(az) cos(el), -cos(az) cos(el), sin(el))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

UP = (0.0, 0.0, 1.0)
FRONT = (0.0, -1.0, 0.0)  # the direction a body in the world convention faces

VectorLike = Tensor | Sequence[float]


def _as_tensor(x: VectorLike, device=None, dtype=None) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device=device or x.device, dtype=dtype or x.dtype)
    return torch.as_tensor(x, device=device, dtype=dtype or torch.float32)


def _normalize(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def look_at(eye: VectorLike, target: VectorLike, up: VectorLike = UP) -> Tensor:
    """Camera-to-world matrices (B, 4, 4) of cameras at ``eye`` looking at ``target``.

    ``eye``, ``target``, ``up``: (3,) or (B, 3), broadcast against each other. Where the viewing
    direction is parallel to ``up`` (looking straight up or down), the world axis least aligned
    with the viewing direction stands in for ``up`` so the frame stays well defined.
    """
    eye_t = _as_tensor(eye)
    target_t = _as_tensor(target, eye_t.device, eye_t.dtype)
    up_t = _as_tensor(up, eye_t.device, eye_t.dtype)
    eye_t, target_t, up_t = torch.broadcast_tensors(eye_t.reshape(-1, 3), target_t.reshape(-1, 3), up_t.reshape(-1, 3))
    forward = _normalize(target_t - eye_t)
    side = torch.linalg.cross(forward, up_t)
    degenerate = side.norm(dim=-1, keepdim=True) < 1e-6 * up_t.norm(dim=-1, keepdim=True)
    fallback = torch.zeros_like(forward).scatter_(-1, forward.abs().argmin(-1, keepdim=True), 1.0)
    side = torch.where(degenerate, torch.linalg.cross(forward, fallback), side)
    x_axis = _normalize(side)
    y_axis = torch.linalg.cross(x_axis, forward)
    c2w = torch.zeros(eye_t.shape[0], 4, 4, dtype=eye_t.dtype, device=eye_t.device)
    c2w[:, :3, 0] = x_axis
    c2w[:, :3, 1] = y_axis
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = eye_t
    c2w[:, 3, 3] = 1.0
    return c2w


def view_direction(azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:
    """Unit vectors (..., 3) from the target towards the camera (see the module docstring)."""
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    return torch.stack([torch.sin(az) * torch.cos(el), -torch.cos(az) * torch.cos(el), torch.sin(el)], dim=-1)


@dataclass
class Cameras:
    """A batch of pinhole cameras: ``c2w`` (B, 4, 4) and vertical field of view ``fov_deg`` (B,).

    A scalar ``fov_deg`` is broadcast to the batch. Pixels are square, so the horizontal field
    of view follows from the image aspect ratio.
    """

    c2w: Tensor
    fov_deg: Tensor = field(default_factory=lambda: torch.tensor(60.0))

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (4, 4):
            raise ValueError(f"c2w must be (B, 4, 4), got {tuple(self.c2w.shape)}")
        fov = torch.as_tensor(self.fov_deg, dtype=self.c2w.dtype, device=self.c2w.device)
        self.fov_deg = fov.reshape(-1).expand(len(self.c2w)).clone() if fov.numel() == 1 else fov
        if self.fov_deg.shape != (len(self.c2w),):
            raise ValueError(f"fov_deg must be a scalar or ({len(self.c2w)},)")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Cameras:
        """A sub-batch; an integer index keeps the batch dimension (a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Cameras(self.c2w[index], self.fov_deg[index])

    def to(self, device=None, dtype=None) -> Cameras:
        return Cameras(self.c2w.to(device, dtype), self.fov_deg.to(device, dtype))

    @property
    def position(self) -> Tensor:
        """Camera centres (B, 3)."""
        return self.c2w[:, :3, 3]

    @property
    def forward(self) -> Tensor:
        """Unit viewing directions (B, 3) (the camera's -Z axis in world space)."""
        return -self.c2w[:, :3, 2]

    def _tan_half_fov(self) -> Tensor:
        return torch.tan(torch.deg2rad(self.fov_deg) / 2)

    def generate_rays(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """World-space rays through pixel centres: origins and unit directions, each (B, H, W, 3).

        Row 0 is the top of the image and column 0 its left, as in an image array.
        """
        dev, dt = self.c2w.device, self.c2w.dtype
        tan_y = self._tan_half_fov()[:, None, None]
        tan_x = tan_y * (width / height)
        x = ((torch.arange(width, device=dev, dtype=dt) + 0.5) / width * 2 - 1)[None, None, :]
        y = (1 - (torch.arange(height, device=dev, dtype=dt) + 0.5) / height * 2)[None, :, None]
        b = len(self)
        dirs_cam = torch.stack(
            [
                (x * tan_x).expand(b, height, width),
                (y * tan_y).expand(b, height, width),
                torch.full((b, height, width), -1.0, device=dev, dtype=dt),
            ],
            dim=-1,
        )
        dirs = _normalize(torch.einsum("bij,bhwj->bhwi", self.c2w[:, :3, :3], dirs_cam))
        origins = self.position[:, None, None, :].expand_as(dirs)
        return origins, dirs

    def project(self, points: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Project world points (N, 3) or (B, N, 3) into every camera.

        Returns continuous pixel coordinates (B, N, 2) as (column, row), where pixel (i, j) spans
        [j, j + 1) x [i, i + 1) (so the image centre is (W/2, H/2)), and the depth (B, N) along
        the viewing axis (positive in front of the camera).
        """
        pts = points.expand(len(self), -1, -1) if points.ndim == 2 else points
        rel = pts - self.position[:, None, :]
        cam = torch.einsum("bji,bnj->bni", self.c2w[:, :3, :3], rel)  # R^T (p - eye)
        depth = -cam[..., 2]
        tan_y = self._tan_half_fov()[:, None]
        tan_x = tan_y * (width / height)
        x_ndc = cam[..., 0] / depth / tan_x
        y_ndc = cam[..., 1] / depth / tan_y
        pix = torch.stack([(x_ndc + 1) / 2 * width, (1 - y_ndc) / 2 * height], dim=-1)
        return pix, depth


def orbit_cameras(
    n: int,
    distance: float,
    elevation_deg: float,
    target: VectorLike,
    fov_deg: float,
    start_azimuth_deg: float = 0.0,
) -> Cameras:
    """``n`` cameras evenly spaced in azimuth around ``target`` (a turntable).

    Azimuth 0 puts the camera on the -Y side, looking at the front of a body that faces -Y;
    azimuths then increase counter-clockwise seen from above (90 = the body's left side).
    """
    target_t = _as_tensor(target).reshape(3)
    dt, dev = target_t.dtype, target_t.device
    azimuth = start_azimuth_deg + 360.0 * torch.arange(n, dtype=dt, device=dev) / n
    direction = view_direction(azimuth, torch.full_like(azimuth, elevation_deg))
    eye = target_t + distance * direction
    return Cameras(look_at(eye, target_t), torch.full((n,), fov_deg, dtype=dt, device=dev))


def framing_cameras(
    bodies: Tensor,
    azimuths_deg,
    elevation_deg: float = 0.0,
    fov_deg: float = 60.0,
    margin: float = 1.15,
) -> Cameras:
    """Cameras that frame each body (B, V, 3) to fill the view, one per (body, azimuth),
    body-major: aimed at the centre of its bounding box, at the distance where its bounding
    sphere fills the field of view, times ``margin``. How the guidance models saw their
    training renders, so every stage that scores a body frames it this way."""
    half = math.radians(fov_deg) / 2
    cams = []
    for verts in bodies.detach():
        centre = 0.5 * (verts.amax(0) + verts.amin(0))
        distance = float((verts - centre).norm(dim=-1).max()) / math.sin(half) * margin
        cams += [
            orbit_cameras(1, distance, elevation_deg, centre, fov_deg, start_azimuth_deg=float(a)) for a in azimuths_deg
        ]
    return Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.fov_deg for c in cams]))


@dataclass
class ViewSamplingConfig:
    """AvatarCLIP's random training views; every default is AvatarCLIP's value.

    Follows hongfz16/AvatarCLIP ``AvatarGen/AppearanceGen/main.py`` (``Runner.train_clip``) and
    ``AvatarGen/AppearanceGen/models/utils.py`` (``random_eye_normal``, ``random_eye``,
    ``random_at``, ``sphere_coord``). AvatarCLIP works in SMPL's frame (Y-up, body facing +Z)
    and places the camera at ``eye = at + d * (sin t cos p, sin t sin p, cos t)``: ``t`` is the
    angle between the viewing direction and the body's FRONT axis, ``p`` the direction of that
    tilt around the front axis. Here the same vectors are mapped into the world convention
    (SMPL (x, y, z) -> world (x, -z, y)).

    * body views (``random_eye_normal`` + ``random_at``): ``d ~ U(distance_range)``,
      ``t ~ N(0, polar_std_deg)`` (not clipped), ``p ~ U(0, 360)``; the look-at point is the
      body centre plus per-axis ``N(0, target_jitter_std)`` clipped to +-``target_jitter_clip``.
      A view is a BACK view (AvatarCLIP swaps in its back prompt) when ``|t| > 90`` degrees,
      i.e. when the camera is behind the body's frontal plane; we test the geometry
      (``cos t < 0``), which is the same event except for ``|t| > 270`` (probability ~1e-5).
    * face close-ups (``random_eye(is_front=1, distance=0.4, theta_std=pi/12)``): every
      ``face_every``-th step (AvatarCLIP: ``iter_i % 4 == 0``), ``d = face_distance``,
      ``t ~ N(0, face_polar_std_deg)`` clipped to +-90, ``p ~ U(0, 360)``, looking at
      ``face_target + face_forward_offset * FRONT`` (AvatarCLIP: ``at = (0, head_height, 0.3)``,
      0.3 m in front of the head, no jitter). Face views are never back views.
    * lighting (``texture_cast_light``): the light direction is ``sphere_coord(t + U(-45, 45),
      p + U(-45, 45))`` in the same frame, i.e. near the camera; ambient ``~ U(ambient_range)``
      and diffuse ``1 - ambient``.
    * field of view: 60 degrees (``camera_angle_x = pi/3`` of the square renders in
      ``data/*/transforms_train.json``), in ``fov_deg``.
    """

    distance_range: tuple[float, float] = (1.0, 2.0)
    polar_std_deg: float = 60.0
    target_jitter_std: float = 0.1
    target_jitter_clip: float = 0.3
    fov_deg: float = 60.0
    face_every: int = 4
    face_distance: float = 0.4
    face_polar_std_deg: float = 15.0
    face_forward_offset: float = 0.3
    light_jitter_deg: float = 45.0
    ambient_range: tuple[float, float] = (0.0, 0.2)


def _avatarclip_direction(theta: Tensor, phi: Tensor) -> Tensor:
    """AvatarCLIP's spherical direction (SMPL frame, polar axis = front) in world coordinates."""
    s = torch.sin(theta)
    return torch.stack([s * torch.cos(phi), -torch.cos(theta), s * torch.sin(phi)], dim=-1)


def sample_views(
    n: int,
    cfg: ViewSamplingConfig,
    generator: torch.Generator | None,
    target: VectorLike,
    face_target: VectorLike | None = None,
    step: int | None = None,
) -> tuple[Cameras, dict[str, Tensor]]:
    """Sample ``n`` AvatarCLIP training views around a body centred at ``target``.

    Which views are face close-ups (none if ``face_target`` is None or ``cfg.face_every <= 0``):

    * ``step`` given: view ``k`` of the batch has the global index ``g = step * n + k`` and is a
      face view iff ``g % face_every == 0``. With ``n = 1`` this is AvatarCLIP's schedule
      exactly; with larger batches exactly one view in ``face_every`` is a face view.
    * ``step=None``: each view is a face view independently with probability 1/face_every.

    All random numbers come from ``generator`` (CPU or the target's device), and the same number
    of them is drawn whatever the outcome, so a seed fixes the whole sequence.

    Returns the cameras and ``info``, a dict of (n,)-shaped tensors unless noted:
    ``distance``, ``elevation_deg``, ``azimuth_deg`` (of the camera about its look-at point, see
    the module docstring), ``is_face``, ``is_back`` (bool), ``target`` (n, 3) look-at points,
    ``light_dir`` (n, 3) unit vectors towards the light and ``ambient``
    (use ``diffuse = 1 - ambient``), ready for :meth:`MeshRenderer.render`.
    """
    target_t = _as_tensor(target).reshape(3)
    dev, dt = target_t.device, target_t.dtype
    gdev = generator.device if generator is not None else torch.device("cpu")

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=gdev, dtype=dt)

    def normal(std: float, *shape: int) -> Tensor:
        return std * torch.randn(*shape, generator=generator, device=gdev, dtype=dt)

    deg = math.pi / 180.0
    body_distance = uniform(*cfg.distance_range, n)
    body_theta = normal(cfg.polar_std_deg * deg, n)
    face_theta = normal(cfg.face_polar_std_deg * deg, n).clamp(-math.pi / 2, math.pi / 2)
    phi = uniform(0.0, 2 * math.pi, n)
    jitter = normal(cfg.target_jitter_std, n, 3).clamp(-cfg.target_jitter_clip, cfg.target_jitter_clip)
    light_dtheta = uniform(-cfg.light_jitter_deg * deg, cfg.light_jitter_deg * deg, n)
    light_dphi = uniform(-cfg.light_jitter_deg * deg, cfg.light_jitter_deg * deg, n)
    ambient = uniform(*cfg.ambient_range, n)
    face_coin = uniform(0.0, 1.0, n)

    has_faces = face_target is not None and cfg.face_every > 0
    if not has_faces:
        is_face = torch.zeros(n, dtype=torch.bool, device=gdev)
    elif step is None:
        is_face = face_coin < 1.0 / cfg.face_every
    else:
        is_face = (step * n + torch.arange(n, device=gdev)) % cfg.face_every == 0

    body_target = target_t.to(gdev) + jitter
    if has_faces:
        face_aim = _as_tensor(face_target, gdev, dt).reshape(3)
        face_aim = face_aim + cfg.face_forward_offset * torch.tensor(FRONT, device=gdev, dtype=dt)
        look = torch.where(is_face[:, None], face_aim.expand(n, 3), body_target)
    else:
        look = body_target
    theta = torch.where(is_face, face_theta, body_theta)
    distance = torch.where(is_face, torch.full_like(body_distance, cfg.face_distance), body_distance)

    direction = _avatarclip_direction(theta, phi)
    eye = look + distance[:, None] * direction
    light_dir = _avatarclip_direction(theta + light_dtheta, phi + light_dphi)

    cameras = Cameras(look_at(eye, look), torch.full((n,), cfg.fov_deg, dtype=dt, device=gdev))
    info = {
        "distance": distance,
        "elevation_deg": torch.rad2deg(torch.asin(direction[:, 2].clamp(-1.0, 1.0))),
        "azimuth_deg": torch.rad2deg(torch.atan2(direction[:, 0], -direction[:, 1])),
        "is_face": is_face,
        "is_back": (torch.cos(theta) < 0) & ~is_face,
        "target": look,
        "light_dir": light_dir,
        "ambient": ambient,
    }
    return cameras.to(dev), {k: v.to(dev) for k, v in info.items()}
