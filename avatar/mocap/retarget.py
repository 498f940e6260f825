"""Retargeting any mocap skeleton to the canonical skeleton (SMPL's 22 joints, Z-up, metres).

Rest-pose aware and rotation based, the same idea as the Anny adapter:
1. Forward kinematics of the source gives each joint's world rotation ``G_s(t)``; since a
   source's rest pose has identity rotations, ``G_s(t)`` is the rotation from its rest pose.
2. A fixed change of frame ``M`` takes the source's axes to the canonical world: its up axis to
   +Z, its rest pose's left (left hip - right hip) to +X, so it faces -Y. Lengths go to metres.
3. Per canonical joint j (driven by source joint s), a calibration ``C_j`` turns the source's
   rest bone direction into the canonical T-pose direction. The canonical world delta is then
   ``D_j(t) = M G_s(t) M^T C_j^-1``: a bone that pointed along the T-pose direction points where
   the source bone points at time t. Joints with no source follow their parent.
4. Deltas become canonical local rotations; the root translation is the source pelvis in
   metres. Clips are resampled to one fixed frame rate (slerp), and can be mirrored.

Source skeletons are recognised by their joint names (CMU cgspeed MotionBuilder, CMU ASF
names, cgspeed 3dsMax, Daz, Reallusion iClone CC, SMPL-style names in either spelling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import torch

from avatar.body.skeleton import (
    BONE_CHILD,
    JOINT_INDEX,
    JOINT_NAMES,
    NUM_JOINTS,
    PARENTS,
    CanonicalPose,
    align_vectors,
    template_joints_world,
    upright_rotation,
)
from avatar.mocap.types import MocapClip, MocapFormatError, MocapSkeleton

# canonical joint -> source joint name, per skeleton family. "{L}"/"{R}" expand per side.
_FAMILY_SIDED: dict[str, dict[str, str]] = {
    "cmu_mb": {  # cgspeed MotionBuilder-friendly
        "pelvis": "Hips", "spine1": "LowerBack", "spine2": "Spine", "spine3": "Spine1",
        "neck": "Neck", "head": "Head", "hip": "{Side}UpLeg", "knee": "{Side}Leg",
        "ankle": "{Side}Foot", "foot": "{Side}ToeBase", "collar": "{Side}Shoulder",
        "shoulder": "{Side}Arm", "elbow": "{Side}ForeArm", "wrist": "{Side}Hand",
    },
    "cmu_asf": {  # CMU ASF bone names (ASF/AMC and BVH conversions keeping them)
        "pelvis": "root", "spine1": "lowerback", "spine2": "upperback", "spine3": "thorax",
        "neck": "lowerneck", "head": "head", "hip": "{s}femur", "knee": "{s}tibia",
        "ankle": "{s}foot", "foot": "{s}toes", "collar": "{s}clavicle",
        "shoulder": "{s}humerus", "elbow": "{s}radius", "wrist": "{s}wrist",
    },
    "cmu_max": {  # cgspeed 3dsMax-friendly
        "pelvis": "Hips", "spine1": "lowerback", "spine2": "Chest", "spine3": "Chest2",
        "neck": "lowerneck", "head": "Head", "hip": "{Side}Hip", "knee": "{Side}Knee",
        "ankle": "{Side}Ankle", "foot": "{Side}Toe", "collar": "{Side}Collar",
        "shoulder": "{Side}Shoulder", "elbow": "{Side}Elbow", "wrist": "{Side}Wrist",
    },
    "daz": {  # cgspeed Daz-friendly
        "pelvis": "hip", "spine1": "abdomen", "spine2": "chest", "neck": "neck", "head": "head",
        "hip": "{s}Thigh", "knee": "{s}Shin", "ankle": "{s}Foot", "collar": "{s}Collar",
        "shoulder": "{s}Shldr", "elbow": "{s}ForeArm", "wrist": "{s}Hand",
    },
    "iclone_cc": {  # Reallusion Character Creator base rig
        "pelvis": "CC_Base_Hip", "spine1": "CC_Base_Waist", "spine2": "CC_Base_Spine01",
        "spine3": "CC_Base_Spine02", "neck": "CC_Base_NeckTwist01", "head": "CC_Base_Head",
        "hip": "CC_Base_{S}_Thigh", "knee": "CC_Base_{S}_Calf", "ankle": "CC_Base_{S}_Foot",
        "foot": "CC_Base_{S}_ToeBase", "collar": "CC_Base_{S}_Clavicle",
        "shoulder": "CC_Base_{S}_Upperarm", "elbow": "CC_Base_{S}_Forearm", "wrist": "CC_Base_{S}_Hand",
    },
    "smpl": {  # SMPL joint names as SMPL/AMASS BVH exporters write them
        "pelvis": "Pelvis", "spine1": "Spine1", "spine2": "Spine2", "spine3": "Spine3",
        "neck": "Neck", "head": "Head", "hip": "{S}_Hip", "knee": "{S}_Knee", "ankle": "{S}_Ankle",
        "foot": "{S}_Foot", "collar": "{S}_Collar", "shoulder": "{S}_Shoulder",
        "elbow": "{S}_Elbow", "wrist": "{S}_Wrist",
    },
    "smpl_lower": {  # SMPL joint names in smplx's spelling, also this project's (write_bvh)
        "pelvis": "pelvis", "spine1": "spine1", "spine2": "spine2", "spine3": "spine3",
        "neck": "neck", "head": "head", "hip": "{side}_hip", "knee": "{side}_knee",
        "ankle": "{side}_ankle", "foot": "{side}_foot", "collar": "{side}_collar",
        "shoulder": "{side}_shoulder", "elbow": "{side}_elbow", "wrist": "{side}_wrist",
    },
}  # fmt: skip
# Without these a clip cannot be retargeted meaningfully.
REQUIRED = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_shoulder",
            "right_shoulder", "left_elbow", "right_elbow", "head")  # fmt: skip
# Leaf joints (no bone child) borrow their parent's calibration: hands continue forearms etc.
_CALIBRATION_FROM = {"left_wrist": "left_elbow", "right_wrist": "right_elbow",
                     "left_foot": "left_ankle", "right_foot": "right_ankle", "head": "neck"}  # fmt: skip


def _expand(family: dict[str, str]) -> dict[str, str]:
    mapping = {}
    for joint, pattern in family.items():
        if "{" not in pattern:
            mapping[joint] = pattern
            continue
        for side, s, S, Side in (("left", "l", "L", "Left"), ("right", "r", "R", "Right")):
            mapping[f"{side}_{joint}"] = pattern.format(s=s, S=S, Side=Side, side=side)
    return mapping


SKELETON_FAMILIES: dict[str, dict[str, str]] = {k: _expand(v) for k, v in _FAMILY_SIDED.items()}


def identify_skeleton(skeleton: MocapSkeleton, path: str = "") -> tuple[str, dict[str, int]]:
    """The skeleton family and canonical joint -> source joint index, or a clear error."""
    names = set(skeleton.names)
    best = max(SKELETON_FAMILIES, key=lambda f: sum(n in names for n in SKELETON_FAMILIES[f].values()))
    mapping = {j: skeleton.index(n) for j, n in SKELETON_FAMILIES[best].items() if n in names}
    missing = [j for j in REQUIRED if j not in mapping]
    if missing:
        raise MocapFormatError(
            f"{path}: cannot map its skeleton to the canonical joints (closest: {best}, "
            f"missing {missing}). Joint names: {skeleton.names[:12]}..."
        )
    return best, mapping


@dataclass
class CanonicalMotion:
    """A canonical pose sequence at a fixed frame rate (what priors train on)."""

    rotations: torch.Tensor  # (T, 22, 3) axis-angle, canonical semantics
    transl: torch.Tensor  # (T, 3) pelvis position, metres, Z-up
    fps: float
    source: str = ""

    @property
    def num_frames(self) -> int:
        return self.rotations.shape[0]

    def poses(self) -> CanonicalPose:
        return CanonicalPose(self.rotations, self.transl)


def motion_arrays(motion: CanonicalMotion, argument: str = "motion") -> tuple[np.ndarray, np.ndarray, float]:
    """A motion's rotations (T, 22, 3), root translations (T, 3) as float64 arrays and its fps,
    checked for the file writers (shapes, at least one frame, finite values, fps > 0), so a bad
    motion fails with a message naming ``argument`` and the field, not deep in a file format."""
    if not isinstance(motion, CanonicalMotion):
        raise TypeError(f"{argument} must be a CanonicalMotion, got {type(motion).__name__}")
    rotations = np.asarray(torch.as_tensor(motion.rotations).detach().cpu(), dtype=np.float64)
    transl = np.asarray(torch.as_tensor(motion.transl).detach().cpu(), dtype=np.float64)
    if rotations.ndim != 3 or rotations.shape[1:] != (NUM_JOINTS, 3) or len(rotations) == 0:
        raise ValueError(
            f"{argument}.rotations must be (T, {NUM_JOINTS}, 3) axis-angle with T >= 1, got {rotations.shape}"
        )
    if transl.shape != (len(rotations), 3):
        raise ValueError(f"{argument}.transl must be (T={len(rotations)}, 3), got {transl.shape}")
    if not (np.isfinite(rotations).all() and np.isfinite(transl).all()):
        raise ValueError(f"{argument} has non-finite rotations or translations")
    fps = float(motion.fps)
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"{argument}.fps must be a positive frame rate, got {motion.fps}")
    return rotations, transl, fps


def _frame_change(skeleton: MocapSkeleton, mapping: dict[str, int], up_axis: str) -> np.ndarray:
    """Rotation M (3x3) from the source's axes to the canonical world (Z-up, left = +X)."""
    rest = skeleton.rest_positions()
    up = np.eye(3)[{"x": 0, "y": 1, "z": 2}[up_axis]]
    left = rest[mapping["left_hip"]] - rest[mapping["right_hip"]]
    left = left - up * (left @ up)
    if np.linalg.norm(left) < 1e-8:
        raise MocapFormatError("the rest pose's hips coincide: cannot find the body's left")
    left /= np.linalg.norm(left)
    back = np.cross(up, left)  # canonical: X=left, Z=up, Y = Z x X = back (the body faces -Y)
    source_axes = np.stack([left, back, up])  # rows: the source vectors that become X, Y, Z
    return source_axes


def _rest_direction(rest: np.ndarray, mapping: dict[str, int], joint: str) -> np.ndarray | None:
    """The source's rest direction of ``joint``'s bone (following the chain past zero-length
    links, e.g. CMU's Hips -> LowerBack), in source axes; None if it has no bone."""
    child = BONE_CHILD.get(joint)
    while child is not None:
        if child in mapping:
            d = rest[mapping[child]] - rest[mapping[joint]]
            if np.linalg.norm(d) > 1e-6:
                return d / np.linalg.norm(d)
        child = BONE_CHILD.get(child)
    return None


def retarget(clip: MocapClip, fps: float | None = 30.0) -> CanonicalMotion:
    """The clip as canonical poses, resampled to ``fps`` (None keeps the clip's rate)."""
    family, mapping = identify_skeleton(clip.skeleton, clip.path)
    M = _frame_change(clip.skeleton, mapping, clip.up_axis)
    rest = clip.skeleton.rest_positions() @ M.T  # canonical axes, source units
    template = template_joints_world(torch.float64).numpy()

    calib = {}
    for joint in JOINT_NAMES:
        source_dir = _rest_direction(rest, mapping, joint) if joint in mapping else None
        if source_dir is None:
            continue
        c = JOINT_INDEX[BONE_CHILD[joint]]
        t = template[c] - template[JOINT_INDEX[joint]]
        calib[joint] = align_vectors(torch.from_numpy(source_dir), torch.from_numpy(t / np.linalg.norm(t))).numpy()
    for leaf, donor in _CALIBRATION_FROM.items():
        if leaf in mapping and leaf not in calib and donor in calib:
            calib[leaf] = calib[donor]

    world_rot, world_pos = clip.global_transforms()
    world_rot = np.einsum("ij,tkjl,ml->tkim", M, world_rot, M)  # M G M^T per frame and joint
    T = clip.num_frames
    deltas = np.zeros((T, NUM_JOINTS, 3, 3))
    for j, joint in enumerate(JOINT_NAMES):
        if joint in mapping:
            c_inv = calib.get(joint, np.eye(3)).T
            deltas[:, j] = world_rot[:, mapping[joint]] @ c_inv
        else:  # no source joint: moves rigidly with its parent
            deltas[:, j] = deltas[:, PARENTS[j]]

    upright = upright_rotation(torch.float64).numpy()
    global_rot = torch.from_numpy(deltas @ upright)
    local = global_rot.clone()
    for j in range(1, NUM_JOINTS):
        local[:, j] = global_rot[:, PARENTS[j]].transpose(-1, -2) @ global_rot[:, j]
    rotations = roma.rotmat_to_rotvec(roma.special_procrustes(local))
    transl = torch.from_numpy(world_pos[:, mapping["pelvis"]] @ M.T * clip.units_to_metres)
    motion = CanonicalMotion(rotations.float(), transl.float(), clip.fps, source=f"{clip.path} ({family})")
    return resample(motion, fps) if fps else motion


def resample(motion: CanonicalMotion, fps: float) -> CanonicalMotion:
    """Resample to ``fps``: slerp of every joint rotation, linear root translation."""
    if abs(motion.fps - fps) < 1e-6 or motion.num_frames < 2:
        return motion
    duration = (motion.num_frames - 1) / motion.fps
    n = int(np.floor(duration * fps + 1e-6)) + 1
    t = torch.arange(n, dtype=torch.float64) * (motion.fps / fps)
    rotations, transl = frames_at(motion.rotations, motion.transl, t)
    return CanonicalMotion(rotations, transl, fps, motion.source)


def frames_at(rotations: torch.Tensor, transl: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Poses of a clip (rotations (T, J, 3), transl (T, 3)) at fractional frame times ``t`` (N,)
    (clamped to the last frame): slerp of every joint rotation, linear root translation."""
    last = rotations.shape[0] - 1
    i0 = t.floor().long().clamp(0, last)
    i1 = (i0 + 1).clamp(max=last)
    w = (t - i0).clamp(0.0, 1.0).float()
    q = _slerp(roma.rotvec_to_unitquat(rotations[i0]), roma.rotvec_to_unitquat(rotations[i1]), w)
    out_transl = transl[i0] * (1 - w)[:, None] + transl[i1] * w[:, None]
    return roma.unitquat_to_rotvec(q).to(rotations.dtype), out_transl.to(transl.dtype)


def _slerp(q0: torch.Tensor, q1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Slerp of unit quaternions (T, J, 4) with one weight per frame (T,), shortest arc."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    w = w[:, None, None]
    near = sin < 1e-6
    a = torch.where(near, 1 - w, torch.sin((1 - w) * theta) / torch.where(near, 1.0, sin))
    b = torch.where(near, w, torch.sin(w * theta) / torch.where(near, 1.0, sin))
    return torch.nn.functional.normalize(a * q0 + b * q1, dim=-1)
