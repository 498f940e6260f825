"""The canonical skeleton: SMPL's 22 body joints, the lingua franca of human motion data.

A canonical pose is what every body model, mocap reader and prior in the project exchanges:

* ``rotations`` (..., 22, 3): local joint rotations as axis-angle vectors, SMPL/AMASS semantics.
  Joint frames are those of SMPL's *body frame* (Y up, +Z forward, +X the body's left), and at
  zero rotation every joint frame is aligned with it, so all-zero rotations are SMPL's T-pose.
  Joint 0 (pelvis) holds the global orientation, mapping the body frame into the world.
* ``transl`` (..., 3): the world position of the root joint (pelvis), in metres.

The world is Z-up (as AMASS and Anny), so an upright body has ``rotations[..., 0] = UPRIGHT``
(a +90 degree turn about X), and then faces -Y with its left on +X, exactly like Anny's rest.
Keeping SMPL's local semantics means AMASS/VPoser/AvatarCLIP data is used without conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import roma
import torch

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

# The joint each joint's rotation aims at: it defines the joint's bone direction, used to
# compare poses across body models and to calibrate a body's rest pose to the T-pose.
BONE_CHILD: dict[str, str] = {
    "pelvis": "spine1", "spine1": "spine2", "spine2": "spine3", "spine3": "neck",
    "neck": "head", "left_hip": "left_knee", "right_hip": "right_knee",
    "left_knee": "left_ankle", "right_knee": "right_ankle", "left_ankle": "left_foot",
    "right_ankle": "right_foot", "left_collar": "left_shoulder",
    "right_collar": "right_shoulder", "left_shoulder": "left_elbow",
    "right_shoulder": "right_elbow", "left_elbow": "left_wrist", "right_elbow": "right_wrist",
}  # fmt: skip

# Left/right pairs for mirroring (augmentation, symmetric checks).
MIRROR_INDEX: tuple[int, ...] = tuple(
    JOINT_INDEX[n.replace("left_", "@").replace("right_", "left_").replace("@", "right_")] for n in JOINT_NAMES
)

# A neutral adult's T-pose joint layout in the body frame (metres, pelvis at the origin).
# Hand-set anthropometric values close to SMPL's neutral template; it is the rest skeleton
# for canonical forward kinematics when no body model is involved (priors, retargeting).
TEMPLATE_JOINTS_BODY_FRAME: tuple[tuple[float, float, float], ...] = (
    (0.00, 0.00, 0.00),    # pelvis
    (0.07, -0.09, 0.00),   # left_hip
    (-0.07, -0.09, 0.00),  # right_hip
    (0.00, 0.11, -0.01),   # spine1
    (0.10, -0.47, 0.00),   # left_knee
    (-0.10, -0.47, 0.00),  # right_knee
    (0.00, 0.25, 0.01),    # spine2
    (0.09, -0.87, -0.04),  # left_ankle
    (-0.09, -0.87, -0.04), # right_ankle
    (0.00, 0.31, 0.02),    # spine3
    (0.11, -0.93, 0.08),   # left_foot
    (-0.11, -0.93, 0.08),  # right_foot
    (0.00, 0.52, -0.02),   # neck
    (0.08, 0.43, -0.01),   # left_collar
    (-0.08, 0.43, -0.01),  # right_collar
    (0.00, 0.61, 0.03),    # head
    (0.18, 0.46, -0.02),   # left_shoulder
    (-0.18, 0.46, -0.02),  # right_shoulder
    (0.44, 0.46, -0.04),   # left_elbow
    (-0.44, 0.46, -0.04),  # right_elbow
    (0.70, 0.46, -0.04),   # left_wrist
    (-0.70, 0.46, -0.04),  # right_wrist
)  # fmt: skip

# Global orientation of an upright body in the Z-up world: body +Y -> world +Z, +Z -> -Y.
UPRIGHT = (math.pi / 2, 0.0, 0.0)


def upright_rotation(dtype=torch.float32, device=None) -> torch.Tensor:
    """The 3x3 rotation mapping the body frame to the Z-up world (the root's rest rotation)."""
    return roma.rotvec_to_rotmat(torch.tensor(UPRIGHT, dtype=dtype, device=device))


def template_joints_world(dtype=torch.float32, device=None) -> torch.Tensor:
    """The template T-pose joints (22, 3) in the Z-up world, upright, pelvis at the origin."""
    joints = torch.tensor(TEMPLATE_JOINTS_BODY_FRAME, dtype=dtype, device=device)
    return joints @ upright_rotation(dtype, device).T


@dataclass
class CanonicalPose:
    """A batch of canonical poses: ``rotations`` (B, 22, 3) axis-angle, ``transl`` (B, 3)."""

    rotations: torch.Tensor
    transl: torch.Tensor

    def __post_init__(self) -> None:
        if self.rotations.ndim == 2:
            self.rotations = self.rotations[None]
        if self.transl.ndim == 1:
            self.transl = self.transl[None]
        if self.rotations.shape[-2:] != (NUM_JOINTS, 3):
            raise ValueError(
                f"CanonicalPose.rotations must be (B, {NUM_JOINTS}, 3) axis-angle, got {tuple(self.rotations.shape)}"
            )
        if self.transl.shape[-1] != 3 or self.transl.shape[0] != self.rotations.shape[0]:
            raise ValueError(
                f"CanonicalPose.transl must be (B, 3) with B={self.rotations.shape[0]}, got {tuple(self.transl.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.rotations.shape[0]

    def rotmats(self) -> torch.Tensor:
        """Local rotations as (B, 22, 3, 3) matrices."""
        return roma.rotvec_to_rotmat(self.rotations)

    def to(self, *args, **kwargs) -> "CanonicalPose":
        return CanonicalPose(self.rotations.to(*args, **kwargs), self.transl.to(*args, **kwargs))

    def __getitem__(self, index) -> "CanonicalPose":
        return CanonicalPose(self.rotations[index], self.transl[index])

    @staticmethod
    def cat(poses: list["CanonicalPose"]) -> "CanonicalPose":
        return CanonicalPose(torch.cat([p.rotations for p in poses]), torch.cat([p.transl for p in poses]))

    @staticmethod
    def rest(batch_size: int = 1, dtype=torch.float32, device=None) -> "CanonicalPose":
        """Upright T-pose at the origin."""
        rotations = torch.zeros(batch_size, NUM_JOINTS, 3, dtype=dtype, device=device)
        rotations[:, 0] = torch.tensor(UPRIGHT, dtype=dtype, device=device)
        return CanonicalPose(rotations, torch.zeros(batch_size, 3, dtype=dtype, device=device))


def global_rotations(local_rotmats: torch.Tensor) -> torch.Tensor:
    """Chain local rotations (..., 22, 3, 3) into world rotations of every joint frame."""
    out = [local_rotmats[..., 0, :, :]]
    for j in range(1, NUM_JOINTS):
        out.append(out[PARENTS[j]] @ local_rotmats[..., j, :, :])
    return torch.stack(out, dim=-3)


def world_deltas(pose: CanonicalPose) -> torch.Tensor:
    """Each joint frame's world rotation relative to the upright T-pose: (B, 22, 3, 3).

    A bone that points along ``d`` in the upright T-pose points along ``delta @ d`` when posed.
    This is what a body model with another rest pose needs to follow a canonical pose.
    """
    upright = upright_rotation(pose.rotations.dtype, pose.rotations.device)
    return global_rotations(pose.rotmats()) @ upright.T


def forward_kinematics(pose: CanonicalPose, rest_joints_body: torch.Tensor | None = None) -> torch.Tensor:
    """World joint positions (B, 22, 3) of the canonical skeleton.

    ``rest_joints_body``: (22, 3) or (B, 22, 3) T-pose joints in the body frame; defaults to the
    template. The pelvis lands at ``pose.transl``.
    """
    dtype, device = pose.rotations.dtype, pose.rotations.device
    if rest_joints_body is None:
        rest_joints_body = torch.tensor(TEMPLATE_JOINTS_BODY_FRAME, dtype=dtype, device=device)
    rest = rest_joints_body.expand(pose.batch_size, NUM_JOINTS, 3)
    rot = global_rotations(pose.rotmats())
    positions = [pose.transl]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        offset = rest[:, j] - rest[:, p]
        positions.append(positions[p] + (rot[:, p] @ offset[..., None])[..., 0])
    return torch.stack(positions, dim=1)


def mirror(pose: CanonicalPose) -> CanonicalPose:
    """Left/right mirror image (across the body's sagittal plane, world X = 0 for a body facing -Y).

    In the body frame mirroring negates X; an axis-angle (x, y, z) becomes (x, -y, -z) and the
    joint swaps with its partner. The root's orientation and translation are mirrored in the
    world's X as well, which for an upright body is the body's X.
    """
    rot = pose.rotations[:, list(MIRROR_INDEX)].clone()
    rot[..., 1:] = -rot[..., 1:]
    # The root rotation maps body to world: mirror both sides (world X and body X both flip).
    transl = pose.transl.clone()
    transl[..., 0] = -transl[..., 0]
    return CanonicalPose(rot, transl)


# ---- A small library of named poses (for demos, tests and the pose-fit stage) -------------
# Each entry: joint -> list of (axis, degrees) applied in order, in the body frame
# (x: body's left, y: up, z: forward). Not mocap: readable poses that exercise every limb.
_POSE_LIBRARY: dict[str, dict[str, list[tuple[str, float]]]] = {
    "t_pose": {},
    "a_pose": {"left_shoulder": [("z", -45)], "right_shoulder": [("z", 45)]},
    "arms_raised": {
        "left_shoulder": [("z", 80)], "right_shoulder": [("z", -80)],
        "left_elbow": [("z", 5)], "right_elbow": [("z", -5)],
    },
    "squat": {
        "left_hip": [("x", -100), ("z", -10)], "right_hip": [("x", -100), ("z", 10)],
        "left_knee": [("x", 115)], "right_knee": [("x", 115)],
        "left_ankle": [("x", -15)], "right_ankle": [("x", -15)],
        "spine1": [("x", 20)],
        # arms reach forward for balance (body +Z is the front)
        "left_shoulder": [("y", -80), ("z", -10)], "right_shoulder": [("y", 80), ("z", 10)],
    },
    "walk_stride": {
        "left_hip": [("x", -30)], "right_hip": [("x", 20)], "right_knee": [("x", 30)],
        # arms swing against the legs: left arm back, right arm forward
        "left_shoulder": [("z", -75), ("x", 25)], "right_shoulder": [("z", 75), ("x", -25)],
        "left_elbow": [("y", 20)], "right_elbow": [("y", -20)],
    },
    "kick": {
        "right_hip": [("x", -85)], "left_knee": [("x", 10)],
        "left_shoulder": [("z", -30)], "right_shoulder": [("z", 30)],
    },
    "bend_forward": {
        "spine1": [("x", 35)], "spine2": [("x", 25)], "spine3": [("x", 20)],
        "left_shoulder": [("z", -75)], "right_shoulder": [("z", 75)],
    },
}  # fmt: skip


def pose_names() -> list[str]:
    return list(_POSE_LIBRARY)


def named_pose(name: str, dtype=torch.float32, device=None) -> CanonicalPose:
    """An upright named pose at the origin, e.g. ``named_pose("arms_raised")``."""
    if name not in _POSE_LIBRARY:
        raise KeyError(f"Unknown canonical pose {name!r}; choose one of {pose_names()}")
    pose = CanonicalPose.rest(1, dtype, device)
    axes = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}
    for joint, steps in _POSE_LIBRARY[name].items():
        rot = torch.eye(3, dtype=dtype, device=device)
        for axis, degrees in steps:
            rotvec = torch.tensor(axes[axis], dtype=dtype, device=device) * math.radians(degrees)
            rot = roma.rotvec_to_rotmat(rotvec) @ rot
        pose.rotations[0, JOINT_INDEX[joint]] = roma.rotmat_to_rotvec(rot)
    return pose


def align_vectors(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The minimal rotations (..., 3, 3) taking unit vectors ``src`` onto ``dst`` (no added
    twist about the vectors); opposite vectors turn half a circle about a perpendicular axis."""
    axis = torch.cross(src, dst, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (src * dst).sum(-1, keepdim=True)
    basis = torch.eye(3, dtype=src.dtype, device=src.device)[src.abs().argmin(-1)]
    perpendicular = torch.cross(src, basis, dim=-1)
    axis = torch.where((sin < 1e-9) & (cos < 0), perpendicular, axis)
    rotvec = torch.nn.functional.normalize(axis, dim=-1) * torch.atan2(sin, cos)
    return roma.rotvec_to_rotmat(rotvec)


def bone_directions(joints: torch.Tensor) -> torch.Tensor:
    """Unit directions (B, len(BONE_CHILD), 3) of each joint's bone, in BONE_CHILD order."""
    src = [JOINT_INDEX[a] for a in BONE_CHILD]
    dst = [JOINT_INDEX[b] for b in BONE_CHILD.values()]
    return torch.nn.functional.normalize(joints[:, dst] - joints[:, src], dim=-1)
