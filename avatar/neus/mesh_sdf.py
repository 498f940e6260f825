"""Signed distance to a triangle mesh and closest surface points, with Warp BVH queries.

The distance is exact (closest point over all triangles, ``wp.mesh_query_point``). The sign
comes from the generalised winding number (``mesh_query_point_sign_winding_number``, the mesh
built with ``support_winding_number=True``): inside where the winding number exceeds 0.5. That
stays sensible for meshes that are only closed-ish (small holes, a few flipped or duplicated
triangles), where ray-parity or closest-normal signs flip whole regions. Faces are assumed
wound outward (counter-clockwise seen from outside), as the body models' are.

Convention: negative inside (SDF convention). ``trimesh.proximity.signed_distance`` uses the
opposite sign (positive inside).
"""

from __future__ import annotations

import torch
import warp as wp
from torch import Tensor

from avatar.utils.warp_setup import init_warp


@wp.kernel
def _closest_points(
    mesh: wp.uint64,
    points: wp.array(dtype=wp.vec3),
    max_dist: float,
    with_sign: int,
    out_dist: wp.array(dtype=float),
    out_point: wp.array(dtype=wp.vec3),
    out_face: wp.array(dtype=wp.int32),
    out_bary: wp.array(dtype=wp.vec3),
):
    i = wp.tid()
    p = points[i]
    sign = float(1.0)
    if with_sign == 1:
        q = wp.mesh_query_point_sign_winding_number(mesh, p, max_dist)
        if q.sign < 0.0:
            sign = -1.0
    else:
        q = wp.mesh_query_point_no_sign(mesh, p, max_dist)
    if q.result:
        closest = wp.mesh_eval_position(mesh, q.face, q.u, q.v)
        out_dist[i] = sign * wp.length(p - closest)
        out_point[i] = closest
        out_face[i] = q.face
        out_bary[i] = wp.vec3(q.u, q.v, 1.0 - q.u - q.v)
    else:
        out_dist[i] = sign * max_dist
        out_point[i] = p
        out_face[i] = -1
        out_bary[i] = wp.vec3(0.0, 0.0, 0.0)


class MeshQuery:
    """A mesh's Warp BVH (with winding-number support), built once and queried many times
    (:func:`fit_fields_to_mesh` queries the same mesh every step). Lives on ``device``."""

    def __init__(self, vertices: Tensor, faces: Tensor, device: torch.device | str | None = None) -> None:
        if faces.ndim != 2 or faces.shape[1] != 3 or vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError("need vertices (V, 3) and faces (F, 3)")
        init_warp()
        self.device = torch.device(device) if device is not None else vertices.device
        self.vertices = vertices.detach().to(device=self.device, dtype=torch.float32).contiguous()
        self.indices = faces.detach().to(device=self.device, dtype=torch.int32).reshape(-1).contiguous()
        if len(faces) == 0 or self.indices.min() < 0 or self.indices.max() >= len(self.vertices):
            raise ValueError(f"faces must index the {len(self.vertices)} vertices and be non-empty")
        self.mesh = wp.Mesh(
            points=wp.from_torch(self.vertices, dtype=wp.vec3),
            indices=wp.from_torch(self.indices, dtype=wp.int32),
            support_winding_number=True,
        )

    def query(self, points: Tensor, signed: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(distance (N,) signed if ``signed`` else unsigned, closest point (N, 3), face (N,)
        int64, barycentric weights (N, 3)), float32 on the mesh's device."""
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
        device = self.device
        pts = points.detach().to(device=device, dtype=torch.float32).contiguous()
        n = len(pts)
        dist = torch.empty(n, dtype=torch.float32, device=device)
        closest = torch.empty(n, 3, dtype=torch.float32, device=device)
        face = torch.empty(n, dtype=torch.int32, device=device)
        bary = torch.empty(n, 3, dtype=torch.float32, device=device)
        if n:
            wp_device = wp.device_from_torch(device)
            args = dict(
                dim=n,
                inputs=[self.mesh.id, wp.from_torch(pts, dtype=wp.vec3), 1.0e6, int(signed)],
                outputs=[
                    wp.from_torch(dist),
                    wp.from_torch(closest, dtype=wp.vec3),
                    wp.from_torch(face),
                    wp.from_torch(bary, dtype=wp.vec3),
                ],
                device=wp_device,
            )
            if wp_device.is_cuda:
                with wp.ScopedStream(wp.stream_from_torch(device)):
                    wp.launch(_closest_points, **args)
            else:
                wp.launch(_closest_points, **args)
        return dist, closest, face.long(), bary


def _query(vertices: Tensor, faces: Tensor, points: Tensor, signed: bool):
    return MeshQuery(vertices, faces, points.device).query(points, signed)


def mesh_signed_distance(vertices: Tensor, faces: Tensor, points: Tensor) -> Tensor:
    """Signed distance (N,) of ``points`` (N, 3) to the mesh, negative inside (winding number
    > 0.5). Not differentiable (a regression target); float32, on ``points``' device."""
    return _query(vertices, faces, points, signed=True)[0].to(points.dtype)


def closest_surface_points(vertices: Tensor, faces: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each point (N, 3): the closest point on the mesh (N, 3), the index (N,) int64 of the
    triangle holding it and its barycentric weights (N, 3) on that triangle's corners
    ``faces[i, 0..2]`` (so ``closest = (bary[:, :, None] * vertices[faces[face]]).sum(1)``).
    Interpolate any per-vertex attribute (colours, skin weights) the same way."""
    _, closest, face, bary = _query(vertices, faces, points, signed=False)
    return closest.to(points.dtype), face, bary.to(points.dtype)
