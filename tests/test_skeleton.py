"""The canonical skeleton: forward kinematics, named poses, mirroring, input validation."""

import math

import pytest
import torch

from avatar.body.skeleton import (
    JOINT_INDEX,
    NUM_JOINTS,
    CanonicalPose,
    forward_kinematics,
    mirror,
    named_pose,
    pose_names,
    template_joints_world,
    world_deltas,
)

J = JOINT_INDEX


def test_rest_pose_is_the_upright_template():
    joints = forward_kinematics(CanonicalPose.rest())[0]
    assert torch.allclose(joints, template_joints_world(), atol=1e-6)
    # Z-up, facing -Y, left on +X: head above pelvis, left wrist at +X, toes forward (-Y).
    assert joints[J["head"], 2] > 0.5
    assert joints[J["left_wrist"], 0] > 0.6 and joints[J["right_wrist"], 0] < -0.6
    assert joints[J["left_foot"], 1] < joints[J["left_ankle"], 1]
    assert torch.allclose(world_deltas(CanonicalPose.rest()), torch.eye(3).expand(1, NUM_JOINTS, 3, 3), atol=1e-6)


def test_translation_moves_the_root():
    pose = CanonicalPose.rest()
    pose.transl[:] = torch.tensor([0.5, -1.0, 2.0])
    joints = forward_kinematics(pose)[0]
    assert torch.allclose(joints[0], torch.tensor([0.5, -1.0, 2.0]))
    assert torch.allclose(joints - joints[0], template_joints_world(), atol=1e-6)


def test_named_poses_are_geometrically_what_they_say():
    joints = {name: forward_kinematics(named_pose(name))[0] for name in pose_names()}
    raised = joints["arms_raised"]
    assert raised[J["left_wrist"], 2] > raised[J["head"], 2] + 0.2
    assert raised[J["right_wrist"], 2] > raised[J["head"], 2] + 0.2
    a_pose = joints["a_pose"]
    assert a_pose[J["left_wrist"], 2] < a_pose[J["left_shoulder"], 2] - 0.3
    squat = joints["squat"]
    assert squat[J["left_knee"], 1] < -0.3  # knees forward (-Y)
    assert abs(squat[J["left_knee"], 2] - squat[J["pelvis"], 2]) < 0.15  # thighs ~horizontal
    kick = joints["kick"]
    assert kick[J["right_ankle"], 1] < -0.5 and kick[J["left_ankle"], 1] > -0.2


def test_mirror_swaps_sides_and_is_an_involution():
    kick = named_pose("kick")
    mirrored = mirror(kick)
    joints, mirrored_joints = forward_kinematics(kick)[0], forward_kinematics(mirrored)[0]
    # The right leg kicked; in the mirror image the left one does, at the mirrored position.
    expected = joints[[J["right_ankle"]]] * torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(mirrored_joints[[J["left_ankle"]]], expected, atol=1e-5)
    twice = mirror(mirrored)
    assert torch.allclose(twice.rotations, kick.rotations, atol=1e-6)


def test_pose_validation_names_the_field():
    with pytest.raises(ValueError, match="rotations must be"):
        CanonicalPose(torch.zeros(1, 21, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="transl must be"):
        CanonicalPose(torch.zeros(2, NUM_JOINTS, 3), torch.zeros(3, 3))
    with pytest.raises(KeyError, match="Unknown canonical pose 'floss'"):
        named_pose("floss")


def test_world_deltas_turn_bones():
    # A 90 degree shoulder turn about the body's forward axis raises the left arm straight up.
    pose = CanonicalPose.rest()
    pose.rotations[0, J["left_shoulder"]] = torch.tensor([0.0, 0.0, math.pi / 2])
    delta = world_deltas(pose)[0, J["left_shoulder"]]
    assert torch.allclose(delta @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
