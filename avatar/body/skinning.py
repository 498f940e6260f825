"""Rigging any surface with the canonical 22-joint skeleton: a :class:`Rig` and skin transfer.

A :class:`Rig` is a mesh in a *bind pose* (a :class:`CanonicalPose`, e.g. the T-pose or the
A-pose) plus per-vertex linear-blend-skinning weights on the 22 canonical joints. It is what
the export and animation stages need: it poses the mesh with any canonical pose (LBS), moves the
mesh to another bind pose (``to_rest``) and saves to a single ``.npz``.

Joint frames follow :mod:`avatar.body.skeleton`: a joint's world transform has the joint's
*global* rotation (including the root's upright turn, so the T-pose's joints all carry the
upright rotation, not the identity) and the joint's forward-kinematics position. The rest
skeleton used by FK is the T-pose joint layout in the *body frame* (Y up, pelvis at the origin),
which is what :func:`avatar.body.skeleton.forward_kinematics` expects.

Skin transfer (:func:`transfer_skinning_weights`) rigs a surface made *around* a body (a NeuS
marching-cubes mesh with clothes or hair, a remeshed body) from the body's own rig: closest
point on the body, then a smoothing solve on the new mesh (see that function for the why).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import warp as wp

from avatar.body.skeleton import (
    NUM_JOINTS,
    CanonicalPose,
    forward_kinematics,
    global_rotations,
    named_pose,
    upright_rotation,
)
from avatar.utils.io import atomic_path
from avatar.utils.warp_setup import init_warp

_RIG_FORMAT = 1


def _homogeneous(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) and (..., 3) -> (..., 4, 4) rigid transforms."""
    out = torch.zeros(*rot.shape[:-2], 4, 4, dtype=rot.dtype, device=rot.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = trans
    out[..., 3, 3] = 1.0
    return out


def _rigid_inverse(t: torch.Tensor) -> torch.Tensor:
    rot_t = t[..., :3, :3].transpose(-1, -2)
    return _homogeneous(rot_t, -(rot_t @ t[..., :3, 3:])[..., 0])


@dataclass
class Rig:
    """A mesh bound to the canonical skeleton.

    vertices (V, 3): the mesh in ``bind_pose`` (world, Z-up). faces (F, 3) int64.
    weights (V, 22): LBS weights, non-negative, rows summing to 1.
    bind_pose: the canonical pose (batch 1) the mesh is in.
    rest_joints (22, 3): T-pose joints in the body frame (pelvis at the origin), FK's rest skeleton.
    bind_joints (22, 3): world joint positions in the bind pose (FK of ``bind_pose``).
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    weights: torch.Tensor
    bind_pose: CanonicalPose
    rest_joints: torch.Tensor
    bind_joints: torch.Tensor

    def __post_init__(self) -> None:
        if self.weights.shape != (self.vertices.shape[0], NUM_JOINTS):
            raise ValueError(
                f"Rig weights must be (V={self.vertices.shape[0]}, {NUM_JOINTS}), got {tuple(self.weights.shape)}"
            )
        if self.bind_pose.batch_size != 1:
            raise ValueError(f"Rig.bind_pose must have batch size 1, got {self.bind_pose.batch_size}")

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    def to(self, *args, **kwargs) -> "Rig":
        """Move/cast the float tensors (faces stay int64, on the vertices' device)."""
        vertices = self.vertices.to(*args, **kwargs)
        return Rig(
            vertices,
            self.faces.to(vertices.device),
            self.weights.to(*args, **kwargs),
            self.bind_pose.to(*args, **kwargs),
            self.rest_joints.to(*args, **kwargs),
            self.bind_joints.to(*args, **kwargs),
        )

    def _as_pose(self, pose: CanonicalPose | str) -> CanonicalPose:
        if isinstance(pose, str):
            pose = named_pose(pose)
            pose = CanonicalPose(pose.rotations, self.bind_pose.transl.detach().cpu().to(pose.transl.dtype))
        return pose.to(self.vertices.device, self.vertices.dtype)

    # ------------------------------------------------------------------ kinematics
    def joint_transforms(self, pose: CanonicalPose | str) -> torch.Tensor:
        """World transforms (B, 22, 4, 4) of every joint: global rotation (upright root
        included) and FK position on this rig's rest skeleton."""
        pose = self._as_pose(pose)
        rot = global_rotations(pose.rotmats())
        return _homogeneous(rot, forward_kinematics(pose, self.rest_joints))

    def skinning_matrices(self, pose: CanonicalPose | str) -> torch.Tensor:
        """Per-joint transforms (B, 22, 4, 4) taking the bind mesh to ``pose``: T(pose) T(bind)^-1."""
        return self.joint_transforms(pose) @ _rigid_inverse(self.joint_transforms(self.bind_pose))

    def pose(self, pose: CanonicalPose | str) -> torch.Tensor:
        """Linear blend skinning of the bind mesh: posed vertices (B, V, 3)."""
        return _blend_apply(self.weights, self.skinning_matrices(pose), self.vertices)

    def to_rest(self, pose_name: str | CanonicalPose = "t_pose") -> "Rig":
        """This mesh moved to another bind pose (weights unchanged), e.g. A-pose -> T-pose.

        The canonical rest is the T-pose, so every bind pose is read as "the T-pose mesh skinned
        to that pose": with ``L_X = sum_j w_j T_j(X) T_j(T-pose)^-1`` per vertex, the new mesh
        is ``L_new L_bind^-1 x`` (inverse LBS to the T-pose, then forward LBS). From a T-pose
        bind this is exactly ``self.pose(new)``; towards the T-pose it is inverse skinning; and
        unlike chaining forward LBS both ways, moving A -> T -> A returns the vertices exactly
        (blending transforms does not commute with inverting them).
        """
        target = self._as_pose(pose_name)
        if target.batch_size != 1:
            raise ValueError("to_rest needs a single target pose")
        dtype = torch.float64
        t_pose = CanonicalPose.rest(1, dtype, self.vertices.device)
        t_pose.transl = self.bind_pose.transl.to(dtype)
        rig64 = self.to(dtype)
        ref_inv = _rigid_inverse(rig64.joint_transforms(t_pose))
        l_bind = _blend(rig64.weights, rig64.joint_transforms(rig64.bind_pose) @ ref_inv)[0]  # (V, 3, 4)
        l_new = _blend(rig64.weights, rig64.joint_transforms(target.to(dtype)) @ ref_inv)[0]
        unposed = torch.linalg.solve(l_bind[:, :, :3], (rig64.vertices - l_bind[:, :, 3])[..., None])[..., 0]
        moved = (l_new[:, :, :3] @ unposed[..., None])[..., 0] + l_new[:, :, 3]
        target = target.to(self.vertices.dtype)
        return replace(
            self,
            vertices=moved.to(self.vertices.dtype),
            bind_pose=CanonicalPose(target.rotations.clone(), target.transl.clone()),
            bind_joints=forward_kinematics(target, self.rest_joints)[0],
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the rig to one ``.npz`` (atomically: a reader never sees half a file)."""
        path = Path(path)
        arrays = {
            "format": np.array(_RIG_FORMAT),
            "vertices": self.vertices.detach().cpu().numpy(),
            "faces": self.faces.detach().cpu().numpy().astype(np.int64),
            "weights": self.weights.detach().cpu().numpy(),
            "bind_rotations": self.bind_pose.rotations.detach().cpu().numpy(),
            "bind_transl": self.bind_pose.transl.detach().cpu().numpy(),
            "rest_joints": self.rest_joints.detach().cpu().numpy(),
            "bind_joints": self.bind_joints.detach().cpu().numpy(),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return path

    @staticmethod
    def load(path: str | Path, device=None, key: str = "stage.avatar_dir") -> "Rig":
        from avatar.utils.files import load_npz

        data = load_npz(path, key, "a rig file written by Rig.save (an appearance run's avatar_rig.npz)",
                        "Rerun the appearance stage (python train.py stage=appearance ...).")  # fmt: skip
        if "weights" not in data or int(data.get("format", 0)) != _RIG_FORMAT:
            raise ValueError(f"{path} is not a rig file written by Rig.save (format {_RIG_FORMAT})")
        t = {k: torch.from_numpy(data[k]).to(device) for k in data if k != "format"}
        return Rig(
            vertices=t["vertices"],
            faces=t["faces"].long(),
            weights=t["weights"],
            bind_pose=CanonicalPose(t["bind_rotations"], t["bind_transl"]),
            rest_joints=t["rest_joints"],
            bind_joints=t["bind_joints"],
        )


def _blend(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Per-vertex blended (B, V, 3, 4) affine maps from per-joint (B, 22, 4, 4) transforms."""
    b = transforms.shape[0]
    flat = transforms[:, :, :3, :].reshape(b, NUM_JOINTS, 12).to(weights.dtype)
    return (weights[None] @ flat).view(b, -1, 3, 4)


def _blend_apply(weights: torch.Tensor, transforms: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    m = _blend(weights, transforms)
    return (m[..., :3] @ vertices[None, :, :, None])[..., 0] + m[..., 3]


def _normalised(weights: torch.Tensor) -> torch.Tensor:
    """Rows clamped non-negative and summing to one (Anny's own weights carry -1e-10 round-off)."""
    weights = weights.clamp_min(0.0)
    return weights / weights.sum(1, keepdim=True).clamp_min(1e-12)


def rig_from_body(body, shape: torch.Tensor | None = None, bind_pose: CanonicalPose | str | None = None) -> Rig:
    """The body model's own mesh and skinning weights, bound in ``bind_pose`` (default T-pose).

    The rest skeleton is the body's T-pose joints taken to the body frame; the bind joints are
    FK on that skeleton (which equals the body's posed joints for SMPL, and for Anny to the
    accuracy of its bone chain).
    """
    with torch.no_grad():
        dtype, device = body.dtype, body.device
        t_out = body(shape, CanonicalPose.rest(1, dtype, device))
        upright = upright_rotation(dtype, device)
        rest_joints = t_out.joints[0] @ upright  # world -> body frame (row vectors)
        rest_joints = rest_joints - rest_joints[:1]
        if bind_pose is None:
            bind_pose = CanonicalPose.rest(1, dtype, device)
        elif isinstance(bind_pose, str):
            bind_pose = named_pose(bind_pose, dtype, device)
        bind_pose = bind_pose.to(device, dtype)
        out = body(shape, bind_pose)
    return Rig(
        vertices=out.vertices[0].clone(),
        faces=body.faces.long().clone(),
        weights=_normalised(body.skinning_weights),
        bind_pose=CanonicalPose(bind_pose.rotations.clone(), bind_pose.transl.clone()),
        rest_joints=rest_joints,
        bind_joints=forward_kinematics(bind_pose, rest_joints)[0],
    )


# ---------------------------------------------------------------------- skin transfer
@wp.kernel
def _closest_point(
    mesh: wp.uint64,
    points: wp.array(dtype=wp.vec3),
    max_dist: float,
    face: wp.array(dtype=wp.int32),
    bary_uv: wp.array(dtype=wp.vec2),
):
    i = wp.tid()
    q = wp.mesh_query_point_no_sign(mesh, points[i], max_dist)
    if q.result:
        face[i] = q.face
        bary_uv[i] = wp.vec2(q.u, q.v)
    else:
        face[i] = -1


def closest_point_weights(
    body_rig: Rig, vertices: torch.Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw transfer: for each point, the body's weights interpolated (barycentric) at the closest
    point on the body surface. Returns (weights (N, 22), distance (N,), body unit normal (N, 3)
    at that point, by the body faces' winding)."""
    init_warp()
    body_v = body_rig.vertices.detach().cpu().numpy().astype(np.float64)
    body_f = body_rig.faces.detach().cpu().numpy().astype(np.int64)
    pts = _numpy(vertices).astype(np.float64)
    mesh = wp.Mesh(
        points=wp.array(body_v.astype(np.float32), dtype=wp.vec3, device="cpu"),
        indices=wp.array(body_f.astype(np.int32).reshape(-1), dtype=wp.int32, device="cpu"),
    )
    face = wp.zeros(len(pts), dtype=wp.int32, device="cpu")
    uv = wp.zeros(len(pts), dtype=wp.vec2, device="cpu")
    wp.launch(
        _closest_point,
        dim=len(pts),
        device="cpu",
        inputs=[mesh.id, wp.array(pts.astype(np.float32), dtype=wp.vec3, device="cpu"), 1.0e6],
        outputs=[face, uv],
    )
    face, uv = face.numpy(), uv.numpy().astype(np.float64)
    if (face < 0).any():
        raise RuntimeError("closest-point query found no body triangle (empty body mesh?)")
    # Warp's barycentrics: p = u * p0 + v * p1 + (1 - u - v) * p2.
    bary = np.stack([uv[:, 0], uv[:, 1], 1.0 - uv[:, 0] - uv[:, 1]], axis=1).clip(0.0, 1.0)
    bary /= bary.sum(1, keepdims=True)
    tri = body_f[face]
    body_w = body_rig.weights.detach().cpu().numpy().astype(np.float64)
    weights = np.einsum("nk,nkj->nj", bary, body_w[tri])
    closest = np.einsum("nk,nkd->nd", bary, body_v[tri])
    corners = body_v[tri]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(1e-12)
    return weights, np.linalg.norm(pts - closest, axis=1), normal


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    corners = vertices[faces]
    face_n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)


def mesh_laplacian(vertices: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """A positive semi-definite graph Laplacian K with edge weights 1/|e|^2 and a lumped mass
    (degree / 4) so that ``M^-1 K ~ -Laplace-Beltrami`` in metres^-2, whatever the resolution.

    Unlike cotangent weights these are never negative, so K is an M-matrix and diffusion with it
    keeps weights non-negative and partitions of unity intact, even on the slivers marching
    cubes produces.
    """
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    length2 = ((vertices[edges[:, 0]] - vertices[edges[:, 1]]) ** 2).sum(1)
    floor = (0.1 * np.sqrt(length2).mean()) ** 2 if len(length2) else 1.0
    w = 1.0 / np.maximum(length2, max(floor, 1e-16))
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adj = sp.csr_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n))
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    return lap.tocsr(), np.maximum(degree, 1.0) / 4.0


def transfer_skinning_weights(
    body_rig: Rig,
    vertices: torch.Tensor | np.ndarray,
    faces: torch.Tensor | np.ndarray,
    smooth_length: float = 0.02,
    falloff: float = 0.03,
    min_confidence: float = 1e-3,
) -> torch.Tensor:
    """LBS weights (N, 22) for a surface made around the body (same pose as ``body_rig``).

    1. Closest point on the body: the body's weights interpolated there, with a confidence
       ``c = exp(-(d / falloff)^2) * max(0, n_surface . n_body)`` floored at ``min_confidence``:
       near and facing the same way = trust it; far (hair, a loose skirt) or facing otherwise
       (the inside of a skirt between the legs) = hardly.
    2. A smoothing solve on the new mesh, ``(M C + s^2 K) W = M C W0`` with ``s = smooth_length``
       (K, M from :func:`mesh_laplacian`): an implicit diffusion whose data term is weighted by
       the confidence, so weights near the body stay close to the body's, and far regions are
       filled in smoothly from their surroundings (diffusion length ~ s / sqrt(c)) rather than
       copied from a closest point that may jump between limbs. This is a soft version of skin
       weight inpainting (Abdrashitov et al., "Robust Skin Weights Transfer via Weight
       Inpainting", 2023). The system is an M-matrix: weights stay non-negative and rows sum to
       one (renormalised anyway against round-off).
    ``smooth_length = 0`` returns the raw closest-point weights.
    """
    v = _numpy(vertices).astype(np.float64)
    f = _numpy(faces).astype(np.int64)
    raw, dist, body_n = closest_point_weights(body_rig, v)
    if smooth_length > 0:
        normals = _vertex_normals(v, f)
        agree = (normals * body_n).sum(1)
        if np.median(agree) < 0:  # one of the two meshes is wound inside out: compare as lines
            agree = -agree
        conf = np.exp(-((dist / max(falloff, 1e-9)) ** 2)) * np.clip(agree, 0.0, 1.0)
        conf = np.maximum(conf, min_confidence)
        lap, mass = mesh_laplacian(v, f)
        data = sp.diags(mass * conf)
        system = (data + smooth_length**2 * lap).tocsc()
        weights = spla.splu(system).solve(np.asfortranarray(data @ raw))
    else:
        weights = raw
    weights = np.clip(weights, 0.0, None)
    weights /= weights.sum(1, keepdims=True).clip(1e-12)
    return torch.as_tensor(weights, dtype=body_rig.weights.dtype, device=body_rig.weights.device)


def rig_surface(
    body_rig: Rig, vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, **transfer_kwargs
) -> Rig:
    """Rig a new surface, given in the body rig's bind pose (same skeleton), with weights from
    :func:`transfer_skinning_weights` (``transfer_kwargs`` go there)."""
    dtype, device = body_rig.vertices.dtype, body_rig.vertices.device
    weights = transfer_skinning_weights(body_rig, vertices, faces, **transfer_kwargs)
    return Rig(
        vertices=torch.as_tensor(np.asarray(_numpy(vertices)), dtype=dtype, device=device),
        faces=torch.as_tensor(np.asarray(_numpy(faces), dtype=np.int64), device=device),
        weights=weights,
        bind_pose=CanonicalPose(body_rig.bind_pose.rotations.clone(), body_rig.bind_pose.transl.clone()),
        rest_joints=body_rig.rest_joints.clone(),
        bind_joints=body_rig.bind_joints.clone(),
    )


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
