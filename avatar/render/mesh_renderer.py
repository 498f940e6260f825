"""A differentiable triangle-mesh renderer: Warp ray casting for visibility, torch for shading.

Per pixel, a Warp kernel casts the camera ray into a BVH of the mesh (``wp.Mesh``) and returns
the index of the first triangle hit. Everything after that is torch: the hit point is recomputed
from that triangle's three vertices and the ray (Moller-Trumbore), which gives barycentric
weights, depth and normals as differentiable functions of the vertex positions; vertex colours
are interpolated with those weights and shaded with ambient + Lambert light.

Gradients therefore flow to vertex colours and vertex positions through everything inside the
silhouette, but NOT through visibility: which triangle a pixel sees (and so the silhouette edges
and occlusion boundaries) is a hard, non-differentiable decision. The coverage mask ``alpha`` is
binary and there is no anti-aliasing.

The BVH of each mesh is cached between calls (per batch index, checked against the faces) and
refitted when only vertex positions changed; ``MeshRenderConfig.bvh_update`` chooses refit or
rebuild. Measured on the Anny body (27k triangles, 2-core CPU, ``python -m benchmarks.benchmark_renderer``):
rebuild 6.8 ms, refit 0.26 ms, and a 224x224 ray cast is as fast after refitting from the rest
pose to a strongly perturbed pose as after a rebuild (1.77 vs 1.78 ms), so refit is the default.
On the CPU the ray casts run in one Warp launch per thread chunk, in parallel (Warp's CPU
launches run on one core each and release the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import warp as wp
from torch import Tensor

from avatar.render.backgrounds import make_background
from avatar.render.cameras import Cameras
from avatar.utils.bounds import at_least
from avatar.utils.warp_setup import init_warp

_MIN_RAYS_PER_THREAD = 4096


@wp.kernel
def _cast_rays(
    mesh_ids: wp.array(dtype=wp.uint64),
    origins: wp.array(dtype=wp.vec3),
    directions: wp.array(dtype=wp.vec3),
    rays_per_view: int,
    first_ray: int,
    max_t: float,
    face_ids: wp.array(dtype=wp.int32),
):
    ray = wp.tid() + first_ray
    view = ray // rays_per_view
    hit = wp.mesh_query_ray(mesh_ids[view], origins[view], directions[ray], max_t)
    if hit.result:
        face_ids[ray] = hit.face
    else:
        face_ids[ray] = -1


@dataclass
class MeshRenderConfig:
    """Image size, lighting and BVH policy of :class:`MeshRenderer`.

    The defaults keep ``ambient + diffuse <= 1`` so shaded colours stay in [0, 1] (nothing is
    clamped, to keep gradients). ``default_color`` is the grey albedo of textureless renders.
    """

    height: int = at_least(1, 224)
    width: int = at_least(1, 224)
    ambient: float = 0.3
    diffuse: float = 0.7
    background: str = "white"
    default_color: float = 0.7
    smooth_normals: bool = True  # interpolated vertex normals; False = flat face normals
    bvh_update: str = "refit"  # "refit" or "rebuild" when only vertex positions change
    max_distance: float = 1.0e4  # rays stop after this many metres


@dataclass
class RenderOutput:
    """Rendered images of a batch of B views (H x W pixels).

    rgb (B, 3, H, W) composited over the background; alpha (B, 1, H, W) hard coverage in {0, 1};
    depth (B, 1, H, W) distance along the camera's viewing axis (z-depth), 0 where no surface;
    normal (B, 3, H, W) world-space unit normals oriented by the triangles' winding (outward for
    a consistently wound closed mesh), 0 where no surface; face_id (B, H, W) int64 index of the
    visible triangle, -1 where no surface.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor
    face_id: Tensor


@dataclass
class _Bvh:
    faces: Tensor  # (F, 3) int64, what the BVH was built for
    indices: Tensor  # (F*3,) int32, memory Warp reads
    points: Tensor  # (V, 3) float32, memory Warp reads (write + refit to move vertices)
    mesh: wp.Mesh


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals of (V, 3) or (B, V, 3) vertices, same shape."""
    batched = vertices.reshape(-1, *vertices.shape[-2:])
    b, nv = batched.shape[:2]
    # Flat indices into (B*V, 3): 1D gathers and index_add are much faster than batched ones.
    idx = (faces[None] + nv * torch.arange(b, device=faces.device)[:, None, None]).reshape(-1, 3)
    flat = batched.reshape(-1, 3)
    v0, v1, v2 = flat[idx[:, 0]], flat[idx[:, 1]], flat[idx[:, 2]]
    face_n = torch.linalg.cross(v1 - v0, v2 - v0)  # length = 2 * area: the area weighting
    normals = torch.zeros_like(flat)
    for k in range(3):
        normals = normals.index_add(0, idx[:, k], face_n)
    return F.normalize(normals, dim=-1, eps=1e-12).view_as(vertices)


def sized_renderer(size: int, like=None, **changes) -> "MeshRenderer":
    """A ``size`` x ``size`` renderer (previews, videos) with ``like``'s settings (a
    :class:`MeshRenderConfig` or its config node; the defaults without one) and ``changes``
    (e.g. ``background="white"``)."""
    if like is None:
        base = {}
    elif isinstance(like, MeshRenderConfig):
        base = dict(vars(like))
    else:
        from omegaconf import DictConfig, OmegaConf

        base = OmegaConf.to_container(like, resolve=True) if isinstance(like, DictConfig) else dict(like)
    return MeshRenderer(MeshRenderConfig(**{**base, "height": int(size), "width": int(size), **changes}))


class MeshRenderer(torch.nn.Module):
    """Renders triangle meshes from batches of :class:`Cameras` (see the module docstring)."""

    def __init__(self, cfg: MeshRenderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MeshRenderConfig()
        if self.cfg.bvh_update not in ("refit", "rebuild"):
            raise ValueError(f"bvh_update must be 'refit' or 'rebuild', got {self.cfg.bvh_update!r}")
        init_warp()
        self._bvhs: dict[int, _Bvh] = {}
        self._loaded_on: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def forward(self, *args, **kwargs) -> RenderOutput:
        return self.render(*args, **kwargs)

    def __getstate__(self) -> dict:
        # Warp meshes and threads belong to this process: copies and pickles start without them.
        state = self.__dict__.copy()
        state.update(_bvhs={}, _loaded_on=set(), _pool=None, _pool_size=0)
        return state

    # ---------------------------------------------------------------- visibility (Warp)
    def _bvh(self, slot: int, points: Tensor, faces: Tensor) -> wp.Mesh:
        """The cached BVH of ``slot`` for float32 ``points`` (V, 3), built or refitted as needed."""
        entry = self._bvhs.get(slot)
        same_topology = (
            entry is not None
            and entry.points.device == points.device
            and entry.points.shape == points.shape
            and entry.faces.shape == faces.shape
            and torch.equal(entry.faces, faces)
        )
        if same_topology and torch.equal(entry.points, points):
            return entry.mesh
        if same_topology and self.cfg.bvh_update == "refit":
            entry.points.copy_(points)
            entry.mesh.refit()
            return entry.mesh
        if len(faces) and (faces.min() < 0 or faces.max() >= len(points)):
            raise ValueError(f"faces index outside the {len(points)} vertices")
        owned_points = points.clone()
        indices = faces.to(torch.int32).reshape(-1).contiguous()
        mesh = wp.Mesh(
            points=wp.from_torch(owned_points, dtype=wp.vec3),
            indices=wp.from_torch(indices, dtype=wp.int32),
        )
        self._bvhs[slot] = _Bvh(faces.clone(), indices, owned_points, mesh)
        return mesh

    def _cast(self, meshes: list[wp.Mesh], origins: Tensor, directions: Tensor) -> Tensor:
        """Face index (B, H, W) int32 of the first hit of every ray, -1 for a miss."""
        b, h, w, _ = directions.shape
        device = directions.device
        n_rays = b * h * w
        ids = torch.tensor([m.id for m in meshes] * (b // len(meshes)), dtype=torch.int64)
        face_ids = torch.empty(n_rays, dtype=torch.int32, device=device)
        args = [
            wp.from_torch(ids.to(device), dtype=wp.uint64),
            wp.from_torch(origins[:, 0, 0].contiguous(), dtype=wp.vec3),
            wp.from_torch(directions.reshape(-1, 3).contiguous(), dtype=wp.vec3),
            h * w,
        ]
        out = [wp.from_torch(face_ids, dtype=wp.int32)]
        wp_device = wp.device_from_torch(device)
        if str(wp_device) not in self._loaded_on:  # compile/load before any threaded launch
            wp.load_module(_cast_rays.module, device=wp_device)
            self._loaded_on.add(str(wp_device))

        def launch(first: int, count: int) -> None:
            wp.launch(
                _cast_rays, dim=count, inputs=[*args, first, self.cfg.max_distance], outputs=out, device=wp_device
            )

        if wp_device.is_cuda:
            with wp.ScopedStream(wp.stream_from_torch(device)):
                launch(0, n_rays)
        else:
            n_chunks = max(1, min(torch.get_num_threads(), n_rays // _MIN_RAYS_PER_THREAD))
            if n_chunks == 1:
                launch(0, n_rays)
            else:
                if self._pool_size < n_chunks:
                    if self._pool is not None:
                        self._pool.shutdown(wait=False)
                    self._pool = ThreadPoolExecutor(n_chunks, thread_name_prefix="warp-raycast")
                    self._pool_size = n_chunks
                bounds = [n_rays * i // n_chunks for i in range(n_chunks + 1)]
                jobs = [self._pool.submit(launch, lo, hi - lo) for lo, hi in zip(bounds, bounds[1:])]
                for job in jobs:
                    job.result()
        return face_ids.view(b, h, w)

    # ---------------------------------------------------------------- rendering
    def render(
        self,
        vertices: Tensor,
        faces: Tensor,
        cameras: Cameras,
        colors: Tensor | None = None,
        background: str | Tensor | None = None,
        light_dir: Tensor | None = None,
        shading: bool = True,
        *,
        ambient: float | Tensor | None = None,
        diffuse: float | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> RenderOutput:
        """Render ``len(cameras)`` views.

        vertices: (V, 3) seen by every camera, or (B, V, 3) one mesh per camera (any float
            dtype; float64 keeps the shading in float64, visibility is always float32).
        faces: (F, 3) int64 triangles, shared.
        colors: None (textureless, ``cfg.default_color`` grey) or (V, 3) / (B, V, 3) in [0, 1].
        background: None (``cfg.background``), a kind of :func:`make_background` (random kinds
            draw from ``generator``), an RGB colour (3,), or images (3, H, W) / (B, 3, H, W).
        light_dir: (3,) or (B, 3) direction from the surface TOWARDS the light; default: towards
            each camera (a headlight).
        shading: False gives the flat, unlit interpolated colours.
        ambient, diffuse: floats or (B,) tensors overriding the config's.

        Shading is ``albedo * (ambient + diffuse * max(0, n.l))``, two-sided: ``n`` (the
        interpolated vertex normal, or the face normal) is flipped towards the viewer on
        triangles seen from behind, so surfaces facing away from the light get only ambient.
        """
        cfg = self.cfg
        b, h, w = len(cameras), cfg.height, cfg.width
        if vertices.ndim == 3 and vertices.shape[0] not in (1, b):
            raise ValueError(f"vertices batch {vertices.shape[0]} does not match {b} cameras")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
        shared = vertices.ndim == 2 or vertices.shape[0] == 1
        verts = vertices.reshape(-1, 3)[None] if shared else vertices  # (1 or B, V, 3)
        device, dtype = verts.device, verts.dtype
        faces = faces.to(device=device, dtype=torch.int64)
        cameras = cameras.to(device=device, dtype=dtype)

        # Visibility: one BVH per distinct mesh.
        points = verts.detach().to(torch.float32)
        meshes = [self._bvh(i, points[i].contiguous(), faces) for i in range(len(verts))]
        origins, directions = cameras.generate_rays(h, w)
        face_id = self._cast(meshes, origins.to(torch.float32), directions.to(torch.float32))

        # Differentiable hit geometry for the covered pixels only.
        face_flat = face_id.reshape(-1).long()
        pix = (face_flat >= 0).nonzero().squeeze(1)
        fid = face_flat[pix]
        view = torch.div(pix, h * w, rounding_mode="floor")
        n_verts = verts.shape[1]
        tri = faces[fid]  # (K, 3)
        rows_per_view = tri + (n_verts * view)[:, None]  # rows of per-view (B*V, C) tensors

        def gather(per_vertex: Tensor, k: int) -> Tensor:  # (1 or B, V, C) -> (K, C), corner k
            rows = tri if per_vertex.shape[0] == 1 else rows_per_view
            return per_vertex.reshape(-1, per_vertex.shape[-1])[rows[:, k]]

        p0, p1, p2 = (gather(verts, k) for k in range(3))
        ray_o = cameras.position[view]
        ray_d = directions.reshape(-1, 3)[pix]
        e1, e2 = p1 - p0, p2 - p0
        pvec = torch.linalg.cross(ray_d, e2)
        inv_det = 1.0 / (e1 * pvec).sum(-1)
        tvec = ray_o - p0
        bary_u = (tvec * pvec).sum(-1) * inv_det
        qvec = torch.linalg.cross(tvec, e1)
        bary_v = (ray_d * qvec).sum(-1) * inv_det
        t = (e2 * qvec).sum(-1) * inv_det
        bary = torch.stack([1 - bary_u - bary_v, bary_u, bary_v], dim=-1)  # weights of p0, p1, p2

        def interpolate(per_vertex: Tensor) -> Tensor:  # (1 or B, V, C) -> (K, C)
            return sum(bary[:, k, None] * gather(per_vertex, k) for k in range(3))

        face_normal = F.normalize(torch.linalg.cross(e1, e2), dim=-1, eps=1e-12)
        if cfg.smooth_normals:
            normal = F.normalize(interpolate(vertex_normals(verts, faces)), dim=-1, eps=1e-12)
        else:
            normal = face_normal
        depth = t * (ray_d * cameras.forward[view]).sum(-1)

        if colors is None:
            albedo = torch.full((len(pix), 3), cfg.default_color, device=device, dtype=dtype)
        else:
            albedo = interpolate(colors.to(dtype).reshape(-1, verts.shape[1], 3))
        if shading:
            light = cameras.c2w[:, :3, 2] if light_dir is None else light_dir.to(device, dtype)
            light = F.normalize(light.reshape(-1, 3).expand(b, 3), dim=-1)[view]
            facing = torch.where((face_normal * ray_d).sum(-1, keepdim=True) > 0, -1.0, 1.0)
            lambert = ((normal * facing) * light).sum(-1, keepdim=True).clamp_min(0.0)
            amb = self._per_view(cfg.ambient if ambient is None else ambient, b, device, dtype)[view]
            dif = self._per_view(cfg.diffuse if diffuse is None else diffuse, b, device, dtype)[view]
            color = albedo * (amb[:, None] + dif[:, None] * lambert)
        else:
            color = albedo

        bg = self._background(background, b, h, w, device, dtype, generator)
        rgb = bg.permute(0, 2, 3, 1).reshape(-1, 3).index_put((pix,), color)
        normal_img = torch.zeros(b * h * w, 3, device=device, dtype=dtype).index_put((pix,), normal)
        depth_img = torch.zeros(b * h * w, device=device, dtype=dtype).index_put((pix,), depth)
        return RenderOutput(
            rgb=rgb.view(b, h, w, 3).permute(0, 3, 1, 2).contiguous(),
            alpha=(face_id >= 0).to(dtype)[:, None],
            depth=depth_img.view(b, 1, h, w),
            normal=normal_img.view(b, h, w, 3).permute(0, 3, 1, 2).contiguous(),
            face_id=face_id.long(),
        )

    @staticmethod
    def _per_view(value: float | Tensor, b: int, device, dtype) -> Tensor:
        return torch.as_tensor(value, device=device, dtype=dtype).reshape(-1).expand(b)

    def _background(self, background, b, h, w, device, dtype, generator) -> Tensor:
        if background is None or isinstance(background, str):
            kind = self.cfg.background if background is None else background
            return make_background(kind, b, h, w, generator, device, dtype)
        bg = background.to(device, dtype)
        if bg.shape == (3,):
            return bg[None, :, None, None].expand(b, 3, h, w)
        return bg.expand(b, 3, h, w)
