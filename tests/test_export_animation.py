"""Exporters for animated avatars and motions: a skinned, animated glTF that skins like
`Rig.pose` (checked by evaluating the file as the glTF specification does), and BVH and AMASS
files that round-trip through the project's own readers."""

import math
import warnings

import numpy as np
import pygltflib
import pygltflib.validator
import pytest
import roma
import torch

from avatar.body.skeleton import (
    JOINT_NAMES,
    PARENTS,
    CanonicalPose,
    forward_kinematics,
    named_pose,
)
from avatar.body.skinning import Rig, rig_from_body
from avatar.export.gltf import (
    MAX_INFLUENCES,
    Z_UP_TO_Y_UP,
    gltf_skinned_vertices,
    read_animated_gltf,
    top_influences,
    write_animated_gltf,
)
from avatar.mocap.amass import read_amass_npz, write_amass_npz
from avatar.mocap.bvh import read_bvh, write_bvh
from avatar.mocap.retarget import CanonicalMotion, retarget

FPS = 24.0
NUM_FRAMES = 8


@pytest.fixture(scope="module")
def rig(anny_low) -> Rig:
    """Anny's low-poly rig bound in the A-pose away from the origin: non-trivial inverse binds."""
    bind = named_pose("a_pose")
    bind.transl[0] = torch.tensor([0.1, -0.2, 0.9])
    return rig_from_body(anny_low, bind_pose=bind)


def smooth_motion(num_frames: int = NUM_FRAMES, fps: float = FPS, seed: int = 0) -> CanonicalMotion:
    """Walk-stride blending into a squat with a smooth random wiggle on every joint, the body
    turning about the vertical and travelling: every joint and the root move."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.linspace(0.0, 1.0, num_frames)[:, None, None]
    rotations = (1 - w) * named_pose("walk_stride").rotations + w * named_pose("squat").rotations
    wiggle = 0.3 * torch.randn(1, 22, 3, generator=gen) * torch.sin(3.0 * w + 0.5)
    rotations = rotations + wiggle
    yaw = torch.zeros(num_frames, 3)
    yaw[:, 2] = torch.linspace(0.0, 1.2, num_frames)
    rotations[:, 0] = roma.rotvec_composition([yaw, named_pose("t_pose").rotations[:, 0].expand(num_frames, 3)])
    t = torch.linspace(0.0, 1.0, num_frames)
    transl = torch.stack([0.5 * t, -0.3 * t, 0.9 + 0.05 * torch.sin(6.0 * t)], dim=1)
    return CanonicalMotion(rotations, transl, fps, source="test")


def y_up(points: torch.Tensor) -> np.ndarray:
    return (points.double() @ torch.tensor(Z_UP_TO_Y_UP).T).numpy()


# ---------------------------------------------------------------------- glTF
def test_gltf_round_trip_skins_like_the_rig(rig, tmp_path):
    motion = smooth_motion()
    colors = torch.rand(rig.num_vertices, 3, generator=torch.Generator().manual_seed(1))
    data = read_animated_gltf(write_animated_gltf(tmp_path / "avatar.glb", rig, motion, vertex_colors=colors))

    assert data["joint_names"] == list(JOINT_NAMES)
    assert data["parents"].tolist() == list(PARENTS)
    assert data["fps"] == FPS and data["rotations"].shape == (NUM_FRAMES, 22, 4)
    np.testing.assert_allclose(data["times"], np.arange(NUM_FRAMES) / FPS, atol=1e-6)
    np.testing.assert_allclose(data["colors"], colors.numpy(), atol=1e-5)
    np.testing.assert_allclose(data["vertices"], rig.vertices.numpy(), atol=1e-6)
    assert np.array_equal(data["faces"], rig.faces.numpy())

    # Joint nodes: rest offsets from the parent (the root: the bind translation), bind rotations.
    rest = rig.rest_joints.double().numpy()
    offsets = np.array([rest[j] - rest[p] for j, p in enumerate(PARENTS) if p >= 0])
    np.testing.assert_allclose(data["rest_translations"][1:], offsets, atol=1e-6)
    np.testing.assert_allclose(data["rest_translations"][0], rig.bind_pose.transl[0].numpy(), atol=1e-6)
    bind_rotmats = roma.unitquat_to_rotmat(torch.from_numpy(data["rest_rotations"]))
    assert torch.allclose(bind_rotmats.float(), rig.bind_pose.rotmats()[0], atol=1e-5)
    inverse_bind = torch.linalg.inv(rig.joint_transforms(rig.bind_pose)[0].double())
    np.testing.assert_allclose(data["inverse_bind_matrices"], inverse_bind.numpy(), atol=1e-5)

    # Keyframes are the motion; the file's own skinning is Rig.pose turned Y-up.
    keyed = roma.unitquat_to_rotmat(torch.from_numpy(data["rotations"])).float()
    assert torch.allclose(keyed, roma.rotvec_to_rotmat(motion.rotations), atol=1e-5)
    np.testing.assert_allclose(data["root_translations"], motion.transl.numpy(), atol=1e-6)
    for frame in (0, NUM_FRAMES // 2, NUM_FRAMES - 1):
        expected = y_up(rig.pose(motion.poses()[frame])[0])
        err = np.linalg.norm(gltf_skinned_vertices(data, frame) - expected, axis=1)
        assert err.max() < 1e-3, f"frame {frame}: max {err.max():.2e} m"


def test_gltf_keeps_the_eight_largest_weights(rig, tmp_path):
    """A rig whose vertices all have 22 influences: the file keeps the 8 largest, renormalised,
    and skins exactly like the rig with those weights."""
    gen = torch.Generator().manual_seed(2)
    spread = torch.softmax(torch.randn(rig.num_vertices, 22, generator=gen), dim=1)
    dense = Rig(rig.vertices, rig.faces, 0.8 * rig.weights + 0.2 * spread, rig.bind_pose,
                rig.rest_joints, rig.bind_joints)  # fmt: skip
    motion = smooth_motion(num_frames=3)
    data = read_animated_gltf(write_animated_gltf(tmp_path / "dense.glb", dense, motion))

    assert data["weights"].shape == (dense.num_vertices, MAX_INFLUENCES)
    np.testing.assert_allclose(data["weights"].sum(1), 1.0, atol=1e-6)
    kept = np.sort(np.take_along_axis(dense.weights.numpy(), data["joints"], axis=1), axis=1)
    np.testing.assert_allclose(kept, np.sort(dense.weights.numpy(), axis=1)[:, -MAX_INFLUENCES:])

    joints, weights = top_influences(dense.weights.double().numpy())
    top8 = np.zeros((dense.num_vertices, 22))
    np.add.at(top8, (np.arange(dense.num_vertices)[:, None], joints), weights)
    truncated = Rig(dense.vertices, dense.faces, torch.from_numpy(top8).float(), dense.bind_pose,
                    dense.rest_joints, dense.bind_joints)  # fmt: skip
    for frame in range(3):
        expected = y_up(truncated.pose(motion.poses()[frame])[0])
        assert np.abs(gltf_skinned_vertices(data, frame) - expected).max() < 1e-4


def test_gltf_without_motion_holds_the_bind_pose(rig, tmp_path):
    colors = torch.randint(0, 256, (rig.num_vertices, 3), dtype=torch.uint8)
    path = write_animated_gltf(tmp_path / "bind.glb", rig, None, vertex_colors=colors, name="bound")
    gltf = pygltflib.GLTF2().load(str(path))
    assert not gltf.animations
    data = read_animated_gltf(path)
    assert data["name"] == "bound" and len(data["times"]) == 0 and data["fps"] is None
    np.testing.assert_allclose(gltf_skinned_vertices(data), y_up(rig.vertices), atol=1e-5)
    np.testing.assert_allclose(data["colors"], colors.numpy() / 255.0, atol=1e-5)
    with pytest.raises(IndexError, match="frame 0"):
        gltf_skinned_vertices(data, 0)


def test_gltf_file_is_well_formed(rig, tmp_path):
    motion = smooth_motion(num_frames=5)
    path = write_animated_gltf(tmp_path / "avatar.glb", rig, motion, vertex_colors=torch.rand(rig.num_vertices, 3))
    assert path.read_bytes()[:4] == b"glTF"
    gltf = pygltflib.GLTF2().load(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "provisional function"
        pygltflib.validator.validate(gltf)
    blob = gltf.binary_blob()
    assert gltf.buffers[0].byteLength == len(blob) and len(blob) % 4 == 0
    for view in gltf.bufferViews:
        assert view.byteOffset % 4 == 0 and view.byteOffset + view.byteLength <= len(blob)

    acc = gltf.accessors
    prim = gltf.meshes[0].primitives[0]
    a = prim.attributes
    for index in (a.POSITION, a.NORMAL, a.COLOR_0, a.JOINTS_0, a.WEIGHTS_0, a.JOINTS_1, a.WEIGHTS_1):
        assert acc[index].count == rig.num_vertices
    assert acc[prim.indices].count == 3 * len(rig.faces)
    assert acc[a.POSITION].min == rig.vertices.min(0).values.tolist()
    assert acc[a.POSITION].max == rig.vertices.max(0).values.tolist()
    skin = gltf.skins[0]
    assert acc[skin.inverseBindMatrices].count == 22 and acc[skin.inverseBindMatrices].type == "MAT4"
    assert [gltf.nodes[j].name for j in skin.joints] == list(JOINT_NAMES)

    (animation,) = gltf.animations
    assert len(animation.channels) == 23  # a rotation per joint and the root's translation
    for sampler in animation.samplers:
        times = acc[sampler.input]
        assert times.count == acc[sampler.output].count == 5 and sampler.interpolation == "LINEAR"
        assert times.min == [0.0] and times.max[0] == pytest.approx(4 / FPS)

    # Scene: the Y-up parent of the skeleton and the skinned mesh node, which has no transform.
    up_node, mesh_node = (gltf.nodes[i] for i in gltf.scenes[gltf.scene].nodes)
    assert up_node.children == [skin.joints[0]]
    assert mesh_node.skin == 0 and mesh_node.mesh == 0
    assert mesh_node.translation is None and mesh_node.rotation is None and mesh_node.matrix is None
    turn = roma.unitquat_to_rotmat(torch.tensor(up_node.rotation, dtype=torch.float64))
    assert torch.allclose(turn @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
                          torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))  # fmt: skip
    data = read_animated_gltf(path)
    np.testing.assert_allclose(np.linalg.norm(data["rotations"], axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(data["normals"], axis=-1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------- BVH
def test_bvh_round_trips_through_read_bvh_and_retarget(tmp_path):
    motion = smooth_motion(num_frames=30, fps=30.0)
    path = write_bvh(tmp_path / "motion.bvh", motion)
    text = path.read_text()
    assert "ROOT pelvis" in text and text.count("End Site") == 5 and "Frames: 30" in text
    assert "CHANNELS 6 Xposition Yposition Zposition" in text

    clip = read_bvh(path)
    assert clip.up_axis == "y" and clip.units_to_metres == 1.0 and clip.fps == 30.0 and clip.num_frames == 30
    back = retarget(clip, fps=None)
    assert "smpl_lower" in back.source
    err = (forward_kinematics(back.poses()) - forward_kinematics(motion.poses())).norm(dim=-1)
    assert err.max() < 1e-3, f"max joint error {err.max():.2e} m"
    assert torch.allclose(roma.rotvec_to_rotmat(back.rotations), roma.rotvec_to_rotmat(motion.rotations), atol=1e-4)


def test_bvh_of_a_rig_skeleton_has_its_joint_positions(rig, tmp_path):
    """With the rig's own skeleton the file's forward kinematics is the rig's, Y-up."""
    motion = smooth_motion()
    clip = read_bvh(write_bvh(tmp_path / "rig.bvh", motion, rest_joints=rig.rest_joints), drop_tpose=False)
    positions = clip.global_transforms()[1]
    expected = forward_kinematics(motion.poses(), rig.rest_joints)
    order = [clip.skeleton.names.index(name) for name in JOINT_NAMES]
    np.testing.assert_allclose(positions[:, order], y_up(expected.reshape(-1, 3)).reshape(positions.shape), atol=1e-4)


# ---------------------------------------------------------------------- AMASS
def test_amass_npz_round_trips_exactly(tmp_path):
    motion = smooth_motion(num_frames=12, fps=60.0)
    path = write_amass_npz(tmp_path / "motion.npz", motion, gender="male")
    with np.load(path) as data:
        assert data["poses"].shape == (12, 72) and not data["poses"][:, 66:].any()
        assert data["trans"].shape == (12, 3) and data["betas"].shape == (16,) and not data["betas"].any()
        assert str(data["gender"]) == "male" and float(data["mocap_framerate"]) == 60.0
    back = read_amass_npz(path, fps=None)
    assert back.fps == 60.0
    assert torch.equal(back.rotations, motion.rotations.float())
    assert torch.allclose(back.transl, motion.transl.float(), atol=1e-7, rtol=0)


# ---------------------------------------------------------------------- bad input
def _bad_motions() -> list[tuple[CanonicalMotion, str]]:
    good = smooth_motion(num_frames=4)
    return [
        (CanonicalMotion(good.rotations[:, :21], good.transl, FPS), "motion.rotations"),
        (CanonicalMotion(good.rotations[:0], good.transl[:0], FPS), "motion.rotations"),
        (CanonicalMotion(good.rotations, good.transl[:3], FPS), "motion.transl"),
        (CanonicalMotion(good.rotations, good.transl, 0.0), "motion.fps"),
        (CanonicalMotion(good.rotations * math.nan, good.transl, FPS), "motion has non-finite"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_motions())))
def test_bad_motions_are_clear_errors_in_every_writer(rig, tmp_path, case):
    motion, message = _bad_motions()[case]
    with pytest.raises(ValueError, match=message):
        write_animated_gltf(tmp_path / "a.glb", rig, motion)
    with pytest.raises(ValueError, match=message):
        write_bvh(tmp_path / "a.bvh", motion)
    with pytest.raises(ValueError, match=message):
        write_amass_npz(tmp_path / "a.npz", motion)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_other_bad_arguments_are_named(rig, tmp_path):
    motion = smooth_motion(num_frames=2)
    with pytest.raises(ValueError, match="vertex_colors"):
        write_animated_gltf(tmp_path / "a.glb", rig, motion, vertex_colors=torch.rand(rig.num_vertices - 1, 3))
    with pytest.raises(ValueError, match="vertex_colors"):
        write_animated_gltf(tmp_path / "a.glb", rig, motion, vertex_colors=2.0 * torch.ones(rig.num_vertices, 3))
    with pytest.raises(TypeError, match="motion"):
        write_animated_gltf(tmp_path / "a.glb", rig, CanonicalPose.rest())
    with pytest.raises(ValueError, match="rest_joints"):
        write_bvh(tmp_path / "a.bvh", motion, rest_joints=torch.zeros(21, 3))
    with pytest.raises(ValueError, match="gender"):
        write_amass_npz(tmp_path / "a.npz", motion, gender="robot")
    assert not list(tmp_path.iterdir())
