"""From a trained NeuS field to an exportable mesh: marching cubes, and visibility-aware colours.

Both functions take plain callables, not the networks, so they serve any field (the NeuS SDF,
an analytic SDF in tests, a mesh's signed distance) and stay independent of how the appearance
stage wires its networks:

* :func:`extract_mesh` samples ``sdf_fn`` on a regular grid (in bounded slabs, without
  gradients) and runs scikit-image's marching cubes at a level. NeuS's SDF is negative inside,
  so triangles are wound to give outward normals (a positive mesh volume).
* :func:`vertex_colors_with_visibility` bakes a view-dependent colour network into per-vertex
  colours by averaging it over the cameras that actually see each vertex (Warp ray casts
  against the mesh itself), so a vertex is never coloured from a view through the body.

Writing the result is :func:`avatar.export.media.save_mesh` (ply/obj/glb).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
import trimesh
import warp as wp
from skimage.measure import marching_cubes
from torch import Tensor

from avatar.render.cameras import view_direction
from avatar.utils.warp_setup import init_warp


def _infer_device(fn, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(fn, torch.nn.Module):
        for p in fn.parameters():
            return p.device
    owner = getattr(fn, "__self__", None)  # a bound method of a module, e.g. fields.sdf
    if isinstance(owner, torch.nn.Module):
        for p in owner.parameters():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def sample_grid(
    sdf_fn: Callable[[Tensor], Tensor],
    resolution: int,
    bound: float,
    chunk: int = 2**18,
    device=None,
    region: tuple[tuple[int, int], ...] | None = None,
    fill: float = 0.0,
) -> np.ndarray:
    """``sdf_fn`` on a resolution^3 grid over [-bound, bound]^3 as a float32 (R, R, R) array
    indexed [x, y, z]. Evaluated slab by slab (constant x), ``chunk`` points per call at most,
    so memory on the device stays bounded whatever the resolution. ``region`` ((x0, x1), (y0,
    y1), (z0, z1)), half-open grid index ranges: only those points are evaluated, the rest are
    ``fill``."""
    device = _infer_device(sdf_fn, device)
    axis = torch.linspace(-bound, bound, resolution, device=device)
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = region or ((0, resolution),) * 3
    volume = np.full((resolution,) * 3, fill, dtype=np.float32)
    yz = torch.stack(torch.meshgrid(axis[y_lo:y_hi], axis[z_lo:z_hi], indexing="ij"), dim=-1).reshape(-1, 2)
    per_slab = len(yz)
    slabs = max(1, chunk // per_slab)
    for x0 in range(x_lo, x_hi, slabs):
        xs = axis[x0 : min(x0 + slabs, x_hi)]
        points = torch.cat([xs.repeat_interleave(per_slab)[:, None], yz.repeat(len(xs), 1)], dim=1)
        values = torch.cat([sdf_fn(points[i : i + chunk]).reshape(-1) for i in range(0, len(points), chunk)])
        volume[x0 : x0 + len(xs), y_lo:y_hi, z_lo:z_hi] = (
            values.float().cpu().numpy().reshape(len(xs), y_hi - y_lo, z_hi - z_lo)
        )
    return volume


def surface_region(
    sdf_fn: Callable[[Tensor], Tensor],
    resolution: int,
    bound: float,
    coarse_resolution: int,
    threshold: float = 0.0,
    chunk: int = 2**18,
    device=None,
) -> tuple[tuple[int, int], ...] | None:
    """The box of the fine grid (half-open index ranges per axis) that holds every point below
    ``threshold``, found on a coarse grid first: a coarse point counts when its value is within
    two coarse cell diagonals of the threshold (a field that changes up to 4x faster than a
    distance still cannot hide a surface from it), and the box grows by one coarse cell. None:
    nothing near the threshold (the caller samples everything and reports it)."""
    coarse = sample_grid(sdf_fn, coarse_resolution, bound, chunk, device)
    cell = 2.0 * bound / (coarse_resolution - 1)
    near = coarse < threshold + 2.0 * cell * math.sqrt(3.0)
    if not near.any() or not np.isfinite(coarse).all():
        return None
    scale = (resolution - 1) / (coarse_resolution - 1)
    region = []
    for axis in range(3):
        c0, c1 = _occupied_range(near, axis)
        region.append((max(0, math.floor((c0 - 1) * scale)), min(resolution, math.ceil((c1 + 1) * scale) + 1)))
    return tuple(region)


def _occupied_range(mask: np.ndarray, axis: int) -> tuple[int, int]:
    hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    return int(hit[0]), int(hit[-1])


def largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The connected component with the largest surface area (floaters and inner bubbles go)."""
    if len(mesh.faces) == 0:
        return mesh
    components = trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces)), min_len=1)
    if len(components) <= 1:
        return mesh
    areas = mesh.area_faces
    best = max(components, key=lambda c: areas[c].sum())
    faces = mesh.faces[np.sort(best)]
    used, inverse = np.unique(faces, return_inverse=True)
    return trimesh.Trimesh(mesh.vertices[used], inverse.reshape(-1, 3), process=False)


def extract_mesh(
    sdf_fn: Callable[[Tensor], Tensor],
    resolution: int = 512,
    bound: float = 1.0,
    threshold: float = 0.0,
    chunk: int = 2**18,
    device=None,
    keep_largest_component: bool = True,
    coarse_resolution: int | None = 48,
) -> trimesh.Trimesh:
    """The ``threshold`` level set of ``sdf_fn`` (points (N, 3) -> values (N,), negative inside)
    as a triangle mesh in object space, outward normals, over the grid [-bound, bound]^3.

    With ``coarse_resolution`` (and ``resolution`` at least twice it) the field is first sampled
    on that coarse grid and only the box around its surface on the fine one
    (:func:`surface_region`); None samples the whole fine grid. Marching cubes runs only on the
    sub-box that holds sign changes (a body fills a small part of the cube, and scikit-image
    needs the block in memory). A surface that reaches the grid's
    border is cut open there (warned): enlarge ``bound``.
    """
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    # A body fills a fraction of the cube: find its box on a coarse grid, sample only that box
    # finely (the rest filled as outside; the demo avatar at 192^3: 31 % of the queries, the same mesh).
    region = None
    if coarse_resolution and resolution >= 2 * coarse_resolution:
        region = surface_region(sdf_fn, resolution, bound, coarse_resolution, threshold, chunk, device)
    volume = sample_grid(sdf_fn, resolution, bound, chunk, device, region=region, fill=threshold + 4.0 * bound)
    bad = ~np.isfinite(volume)
    if bad.any():
        raise ValueError(
            f"sdf_fn returned {int(bad.sum())} non-finite values on the {resolution}^3 grid; "
            "the field has diverged (check the training losses / checkpoint)."
        )
    inside = volume < threshold
    if not inside.any() or inside.all():
        sampled = volume[tuple(slice(a, b) for a, b in region)] if region else volume
        raise ValueError(
            f"The field has no surface at threshold={threshold} inside [-{bound}, {bound}]^3: its "
            f"values range over [{sampled.min():.4g}, {sampled.max():.4g}] and are all "
            f"{'below' if inside.all() else 'above'} the threshold. Check the threshold, that "
            "`bound` covers the object (object-space units), and that the SDF is negative inside."
        )
    # Sign changes live in the intersection of both sets' bounding boxes, dilated by a voxel.
    lo, hi = [], []
    for axis in range(3):
        a0, a1 = _occupied_range(inside, axis)
        b0, b1 = _occupied_range(~inside, axis)
        lo.append(max(a0, b0) - 1)
        hi.append(min(a1, b1) + 2)
    lo = [max(v, 0) for v in lo]
    hi = [min(v, resolution) for v in hi]
    if (
        inside[0].any()
        or inside[-1].any()
        or inside[:, 0].any()
        or inside[:, -1].any()
        or inside[:, :, 0].any()
        or inside[:, :, -1].any()
    ):
        warnings.warn(
            f"The level set reaches the border of [-{bound}, {bound}]^3: the extracted mesh is open "
            "there. Increase `bound`.",
            stacklevel=2,
        )
    block = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    del inside
    step = 2.0 * bound / (resolution - 1)
    # With the volume indexed [x, y, z], scikit-image's default winding ('descent') gives
    # outward normals (positive volume) for a field that is negative inside (tested).
    verts, faces, _, _ = marching_cubes(
        block, level=threshold, spacing=(step, step, step), gradient_direction="descent", allow_degenerate=False
    )
    verts = verts.astype(np.float64) + np.asarray(lo, dtype=np.float64) * step - bound
    mesh = trimesh.Trimesh(verts, faces.astype(np.int64), process=False)
    if keep_largest_component:
        mesh = largest_component(mesh)
    return mesh


# ------------------------------------------------------------------------- vertex colours
@wp.kernel
def _visible_from(
    mesh: wp.uint64,
    camera: wp.vec3,
    points: wp.array(dtype=wp.vec3),
    eps: float,
    visible: wp.array(dtype=wp.int32),
):
    i = wp.tid()
    delta = points[i] - camera
    dist = wp.length(delta)
    q = wp.mesh_query_ray(mesh, camera, delta / dist, dist + eps)
    # Visible when the first hit is (within eps) the vertex itself; a ray that slips between
    # the triangles around its target vertex met nothing before it either.
    if q.result and q.t < dist - eps:
        visible[i] = 0
    else:
        visible[i] = 1


def camera_positions(
    center: np.ndarray, distance: float, n_views: int = 8, elevations: tuple[float, ...] = (-25.0, 25.0)
) -> np.ndarray:
    """Rings of ``n_views`` cameras at each elevation (alternate rings turned by half a step)
    plus one straight above and one below, in the Z-up world convention of the renderer."""
    az, el = [], []
    for k, elevation in enumerate(elevations):
        offset = 0.5 * (k % 2) * 360.0 / n_views
        az += [offset + 360.0 * i / n_views for i in range(n_views)]
        el += [elevation] * n_views
    az += [0.0, 0.0]
    el += [90.0, -90.0]
    dirs = view_direction(torch.tensor(az, dtype=torch.float64), torch.tensor(el, dtype=torch.float64)).numpy()
    return center[None] + distance * dirs


def vertex_visibility(mesh: trimesh.Trimesh, cameras: np.ndarray, eps: float | None = None) -> np.ndarray:
    """(n_cameras, V) bool: whether the ray from each camera to each vertex first hits the mesh
    at that vertex (within ``eps``; default 1e-3 of the mesh's bounding radius)."""
    init_warp()
    verts = np.ascontiguousarray(mesh.vertices, dtype=np.float32)
    if eps is None:
        eps = 1e-3 * float(np.linalg.norm(mesh.vertices - mesh.bounds.mean(0), axis=1).max())
    wmesh = wp.Mesh(
        points=wp.array(verts, dtype=wp.vec3, device="cpu"),
        indices=wp.array(np.ascontiguousarray(mesh.faces, dtype=np.int32).reshape(-1), dtype=wp.int32, device="cpu"),
    )
    points = wp.array(verts, dtype=wp.vec3, device="cpu")
    out = np.empty((len(cameras), len(verts)), dtype=bool)
    visible = wp.zeros(len(verts), dtype=wp.int32, device="cpu")
    for k, cam in enumerate(np.asarray(cameras, dtype=np.float32)):
        wp.launch(
            _visible_from,
            dim=len(verts),
            inputs=[wmesh.id, wp.vec3(*cam), points, float(eps)],
            outputs=[visible],
            device="cpu",
        )
        out[k] = visible.numpy().astype(bool)
    return out


@torch.no_grad()
def vertex_colors_with_visibility(
    mesh: trimesh.Trimesh,
    color_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    n_views: int = 8,
    elevations: tuple[float, ...] = (-25.0, 25.0),
    distance: float = 2.5,
    min_cos: float = 0.1,
    eps: float | None = None,
    chunk: int = 2**16,
    device=None,
) -> np.ndarray:
    """Per-vertex colours (V, 3) in [0, 1] for export, from a view-dependent colour function
    ``color_fn(points, view_dirs, normals) -> (N, 3)``.

    Cameras: :func:`camera_positions` around the mesh's bounding-box centre, ``distance`` times
    its bounding radius away. A vertex's colour is the mean of ``color_fn(vertex, d, normal)``
    over the cameras that see it, ``d`` the unit direction from the camera to the vertex (the
    ray direction NeuS rendered with). Seeing = the ray reaches the vertex unoccluded
    (:func:`vertex_visibility`) and meets the surface from its front (``cos > min_cos``
    between the normal and the direction back to the camera: grazing views of a colour network
    are unreliable, and a polygonal mesh sees a little past its smooth normal's horizon;
    ``min_cos=-1`` keeps only the occlusion test). A vertex no camera sees (deep in a crease) is coloured as if looked at
    head-on, ``d = -normal``.
    """
    device = _infer_device(color_fn, device)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    center = mesh.bounds.mean(0)
    radius = float(np.linalg.norm(verts - center, axis=1).max())
    cameras = camera_positions(center, distance * max(radius, 1e-9), n_views, elevations)
    seen = vertex_visibility(mesh, cameras, eps)

    def shade(idx: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(idx), chunk):
            sel = idx[i : i + chunk]
            p = torch.as_tensor(verts[sel], dtype=torch.float32, device=device)
            d = torch.as_tensor(dirs[i : i + chunk], dtype=torch.float32, device=device)
            n = torch.as_tensor(normals[sel], dtype=torch.float32, device=device)
            out.append(color_fn(p, d, n).reshape(-1, 3).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 3))

    total = np.zeros((len(verts), 3))
    count = np.zeros(len(verts))
    for cam, visible in zip(cameras, seen):
        dirs = verts - cam
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True).clip(1e-12)
        visible = visible & (-(dirs * normals).sum(1) > min_cos)
        idx = np.flatnonzero(visible)
        if len(idx):
            total[idx] += shade(idx, dirs[idx])
            count[idx] += 1
    unseen = np.flatnonzero(count == 0)
    if len(unseen):
        total[unseen] = shade(unseen, -normals[unseen])
        count[unseen] = 1
    colors = total / count[:, None]
    if not np.isfinite(colors).all():
        raise ValueError("color_fn returned non-finite colours")
    return np.clip(colors, 0.0, 1.0)


__all__ = [
    "camera_positions",
    "extract_mesh",
    "largest_component",
    "sample_grid",
    "vertex_colors_with_visibility",
    "vertex_visibility",
]
