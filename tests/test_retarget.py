"""Retargeting source skeletons to the canonical one, and AMASS files into the same form."""

import math

import numpy as np
import pytest
import roma
import torch

from avatar.body.skeleton import (
    JOINT_INDEX,
    JOINT_NAMES,
    PARENTS,
    TEMPLATE_JOINTS_BODY_FRAME,
    CanonicalPose,
    forward_kinematics,
    named_pose,
)
from avatar.mocap.amass import SMPL_NEUTRAL_PELVIS, read_amass_npz
from avatar.mocap.retarget import SKELETON_FAMILIES, CanonicalMotion, identify_skeleton, resample, retarget
from avatar.mocap.types import MocapClip, MocapFormatError, MocapSkeleton

from synthetic_mocap import FILE_TO_CANONICAL  # Y-up, body facing +Z -> canonical

SMPL_STYLE = SKELETON_FAMILIES["smpl"]  # canonical joint -> SMPL-style BVH joint name


def smpl_style_clip(pose: CanonicalPose, units_to_metres: float = 0.01) -> MocapClip:
    """A Y-up, centimetre 'BVH' of the canonical skeleton performing ``pose`` (one frame each)."""
    joints = np.array(TEMPLATE_JOINTS_BODY_FRAME) / units_to_metres
    offsets = np.array([joints[j] - joints[p] if p >= 0 else np.zeros(3) for j, p in enumerate(PARENTS)])
    skeleton = MocapSkeleton([SMPL_STYLE[n] for n in JOINT_NAMES], list(PARENTS), offsets)
    local = pose.rotmats().double().clone()
    local[:, 0] = FILE_TO_CANONICAL.T @ local[:, 0]  # the file's root rotation has no Rx(90)
    root = (pose.transl.double() @ FILE_TO_CANONICAL) / units_to_metres  # M^T p, row-vector form
    return MocapClip("synthetic.bvh", skeleton, local.numpy(), root.numpy(), fps=30.0,
                     units_to_metres=units_to_metres, up_axis="y")  # fmt: skip


def test_smpl_names_are_recognised():
    clip = smpl_style_clip(CanonicalPose.rest())
    family, mapping = identify_skeleton(clip.skeleton)
    assert family == "smpl" and len(mapping) == 22


def test_round_trip_through_a_y_up_centimetre_file():
    gen = torch.Generator().manual_seed(0)
    poses = CanonicalPose.cat([named_pose(n) for n in ("arms_raised", "squat", "kick", "walk_stride")])
    poses.rotations[:, 1:] += 0.2 * torch.randn(poses.rotations[:, 1:].shape, generator=gen)
    poses.rotations[:, 0] = roma.rotmat_to_rotvec(  # face different directions
        roma.rotvec_to_rotmat(torch.tensor([[0, 0, 0.5], [0, 0, 2.0], [0, 0, -1.0], [0.1, 0.2, 3.0]]))
        @ poses.rotmats()[:, 0]
    )
    poses.transl[:] = torch.tensor([[0.0, 0.0, 0.9], [1.0, 2.0, 0.5], [-0.5, 0.3, 0.95], [0.2, -3.0, 1.0]])
    motion = retarget(smpl_style_clip(poses), fps=None)
    assert torch.allclose(roma.rotvec_to_rotmat(motion.rotations), poses.rotmats(), atol=1e-5)
    assert torch.allclose(motion.transl, poses.transl, atol=1e-5)


def test_rest_pose_awareness_a_pose_source():
    """A source whose rest pose is an A-pose: identity rotations must give an A-pose, and the
    source's 45-degree arm raise must give the canonical T-pose arm."""
    joints = np.array(TEMPLATE_JOINTS_BODY_FRAME)
    for side, sign in (("left", 1), ("right", -1)):
        s, e, w = (JOINT_INDEX[f"{side}_{j}"] for j in ("shoulder", "elbow", "wrist"))
        for j in (e, w):  # rotate the arm down 45 degrees about the shoulder (body-frame Z)
            rel = joints[j] - joints[s]
            rot = roma.rotvec_to_rotmat(torch.tensor([0, 0, -sign * math.pi / 4], dtype=torch.float64)).numpy()
            joints[j] = joints[s] + rot @ rel
    offsets = np.array([joints[j] - joints[p] if p >= 0 else np.zeros(3) for j, p in enumerate(PARENTS)])
    skeleton = MocapSkeleton([SMPL_STYLE[n] for n in JOINT_NAMES], list(PARENTS), offsets)
    local = np.tile(np.eye(3), (2, 22, 1, 1))
    raise_arm = roma.rotvec_to_rotmat(torch.tensor([0, 0, math.pi / 4], dtype=torch.float64)).numpy()
    local[1, JOINT_INDEX["left_shoulder"]] = raise_arm
    clip = MocapClip("a_pose.bvh", skeleton, local, np.zeros((2, 3)), 30.0, 1.0, "y")
    motion = retarget(clip, fps=None)
    fk = forward_kinematics(motion.poses())
    J = JOINT_INDEX
    arm0 = fk[0, J["left_wrist"]] - fk[0, J["left_shoulder"]]
    assert arm0[2] < -0.3 * arm0.norm()  # at rest: arm hangs 45 degrees down
    arm1 = fk[1, J["left_wrist"]] - fk[1, J["left_shoulder"]]
    assert abs(arm1[2]) < 0.02 and arm1[0] > 0.45  # raised 45: horizontal, to the left (+X)
    right1 = fk[1, J["right_wrist"]] - fk[1, J["right_shoulder"]]
    assert right1[2] < -0.3 * right1.norm()  # the other arm stayed down


def test_unknown_skeleton_is_a_clear_error():
    skeleton = MocapSkeleton(["a", "b", "c"], [-1, 0, 1], np.zeros((3, 3)))
    clip = MocapClip("odd.bvh", skeleton, np.tile(np.eye(3), (1, 3, 1, 1)), np.zeros((1, 3)), 30.0, 1.0)
    with pytest.raises(MocapFormatError, match="odd.bvh: cannot map its skeleton"):
        retarget(clip)


def test_resample_frame_count_and_interpolation():
    t = torch.arange(121, dtype=torch.float32)
    rotations = torch.zeros(121, 22, 3)
    rotations[:, 1, 2] = t * 0.005  # a steady turn
    motion = CanonicalMotion(rotations, torch.stack([t / 120, 0 * t, 0 * t], -1), fps=120.0)
    half = resample(motion, 30.0)
    assert half.num_frames == 31 and half.fps == 30.0
    assert torch.allclose(half.rotations[:, 1, 2], torch.arange(31) * 0.02, atol=1e-5)
    assert torch.allclose(half.transl[:, 0], torch.arange(31) / 30.0, atol=1e-6)


def test_amass_npz(tmp_path):
    gen = np.random.default_rng(0)
    poses = gen.normal(0, 0.2, size=(120, 156))
    trans = gen.normal(0, 1, size=(120, 3))
    path = tmp_path / "clip_poses.npz"
    np.savez(path, poses=poses, trans=trans, mocap_framerate=120.0, betas=np.zeros(16))
    motion = read_amass_npz(path, fps=None)
    assert torch.allclose(motion.rotations, torch.tensor(poses[:, :66].reshape(120, 22, 3), dtype=torch.float32))
    assert torch.allclose(motion.transl, torch.tensor(trans + SMPL_NEUTRAL_PELVIS, dtype=torch.float32), atol=1e-6)
    assert read_amass_npz(path, fps=30.0).num_frames == 30
    np.savez(tmp_path / "bad.npz", poses=poses)
    with pytest.raises(MocapFormatError, match="bad.npz.*trans"):
        read_amass_npz(tmp_path / "bad.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"\x00" * 10)
    with pytest.raises(MocapFormatError, match="corrupt.npz"):
        read_amass_npz(tmp_path / "corrupt.npz")
