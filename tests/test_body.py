"""Body models behind one protocol: Anny (default) and SMPL (through smplx's real loader, from a
synthetic SMPL-format file), posed by the same canonical poses."""

import pickle

import pytest
import torch

from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
from avatar.body.base import build_body
from avatar.body.skeleton import JOINT_INDEX, CanonicalPose, bone_directions, named_pose, template_joints_world
from avatar.body.smpl_body import BodyModelFileError, SmplBody, SmplBodyConfig

from synthetic_smpl import make_synthetic_smpl

J = JOINT_INDEX


def check_mesh(body, out):
    assert out.vertices.shape == (1, body.num_vertices, 3)
    assert body.faces.min() >= 0 and body.faces.max() < body.num_vertices
    assert torch.allclose(body.skinning_weights.sum(1), torch.ones(body.num_vertices), atol=1e-5)
    assert out.joints.shape == (1, 22, 3)
    assert torch.isfinite(out.vertices).all()


@pytest.mark.parametrize("body_fixture", ["anny_low", "smpl_synthetic"])
def test_protocol_and_t_pose(body_fixture, request):
    body = request.getfixturevalue(body_fixture)
    out = body(pose=CanonicalPose.rest())
    check_mesh(body, out)
    # The canonical T-pose has the template's bone directions on every body.
    cos = (bone_directions(out.joints) * bone_directions(template_joints_world()[None])).sum(-1)
    assert cos.min() > 0.999
    assert torch.allclose(out.joints[0, 0], torch.zeros(3), atol=1e-5)  # pelvis at transl


@pytest.mark.parametrize("pose_name", ["t_pose", "arms_raised", "squat", "kick"])
def test_same_canonical_pose_same_pose_on_anny_and_smpl(pose_name, anny_low, smpl_synthetic):
    pose = named_pose(pose_name)
    a, s = anny_low(pose=pose), smpl_synthetic(pose=pose)
    cos = (bone_directions(a.joints) * bone_directions(s.joints)).sum(-1)
    assert cos.min() > 0.99, f"{pose_name}: bone directions differ, min cos {cos.min():.3f}"


@pytest.mark.parametrize("body_fixture", ["anny_low", "smpl_synthetic"])
def test_pose_geometry_on_each_body(body_fixture, request):
    body = request.getfixturevalue(body_fixture)
    raised = body(pose=named_pose("arms_raised"))
    joints, verts = raised.joints[0], raised.vertices[0]
    assert joints[J["left_wrist"], 2] > joints[J["head"], 2] and joints[J["right_wrist"], 2] > joints[J["head"], 2]
    # The mesh follows the skeleton: the highest vertices belong to the hands now.
    rest_top = body(pose=CanonicalPose.rest()).vertices[0, :, 2].max()
    assert verts[:, 2].max() > rest_top + 0.2
    t = body(pose=named_pose("t_pose")).joints[0]
    assert abs(t[J["left_wrist"], 2] - t[J["left_shoulder"], 2]) < 0.05
    squat = body(pose=named_pose("squat")).joints[0]
    assert squat[J["left_knee"], 1] < squat[J["pelvis"], 1] - 0.25  # knees in front
    assert squat[J["left_ankle"], 2] < squat[J["left_knee"], 2] - 0.25  # shins down


def test_anny_is_differentiable_in_shape_and_pose(anny_low):
    shape = anny_low.default_shape().requires_grad_(True)
    pose = named_pose("a_pose")
    pose.rotations.requires_grad_(True)
    out = anny_low(shape=shape, pose=pose)
    (out.vertices[..., 2].max() + out.joints[:, J["left_wrist"]].sum()).backward()
    assert torch.isfinite(shape.grad).all() and shape.grad.abs().sum() > 0
    assert pose.rotations.grad[0, J["left_shoulder"]].abs().sum() > 0


def test_anny_phenotypes_change_the_body(anny_low):
    shape = anny_low.default_shape(2)
    shape[1, anny_low.shape_names.index("height")] = 1.0
    shape[0, anny_low.shape_names.index("height")] = 0.0
    verts = anny_low(shape=shape).vertices
    heights = verts[..., 2].amax(1) - verts[..., 2].amin(1)
    assert heights[1] > heights[0] + 0.1


def test_anny_keeps_a_fixed_shapes_rest_model_without_changing_any_result(anny_low):
    """One repeated shape without gradient (the motion stage's every step) reuses its rest model
    and calibration; outputs and pose gradients equal a pass that computes them."""
    g = torch.Generator().manual_seed(0)
    pose = CanonicalPose((torch.rand(3, 22, 3, generator=g) - 0.5) * 0.8, torch.randn(3, 3, generator=g) * 0.1)
    results = []
    for shape in (None, anny_low.default_shape(3).requires_grad_(True)):  # kept / computed
        rotations = pose.rotations.clone().requires_grad_(True)
        out = anny_low(shape, CanonicalPose(rotations, pose.transl))
        out.vertices.sum().backward()
        results.append((out, rotations.grad))
    (kept, kept_grad), (computed, computed_grad) = results
    assert anny_low._fixed_shape_cache  # the default shape was kept
    # Equal to float32 rounding: a shape that needs a gradient takes other CPU kernels, which on
    # some CPUs round differently (2026-12-06: 8e-7 m apart on one machine, bit-equal on another).
    for field in ("vertices", "joints", "rest_vertices", "rest_joints"):
        torch.testing.assert_close(getattr(kept, field), getattr(computed, field), rtol=0, atol=1e-5, msg=field)
    torch.testing.assert_close(kept_grad, computed_grad, rtol=1e-5, atol=1e-3)  # gradients up to ~300
    # Another shape is not served the kept one.
    tall = anny_low.default_shape(3)
    tall[:, anny_low.shape_names.index("height")] = 1.0
    assert anny_low(tall, pose).vertices[..., 2].amax() > kept.vertices[..., 2].amax() + 0.05
    assert torch.equal(anny_low(None, pose).vertices, kept.vertices)


@pytest.mark.slow
def test_full_anny_topology_and_build_by_name():
    body = build_body(AnnyBodyConfig())
    assert isinstance(body, AnnyBody) and body.num_vertices == 13718 and body.faces.shape == (27420, 3)
    assert body.dtype == torch.float32


def test_smpl_loads_the_file_through_smplx(smpl_dir, smpl_synthetic):
    data = make_synthetic_smpl()
    assert torch.allclose(smpl_synthetic.smpl.v_template, torch.tensor(data["v_template"], dtype=torch.float32))
    # betas are live shape parameters: beta0 of the synthetic file makes the body taller.
    betas = torch.zeros(1, 10)
    betas[0, 0] = 3.0
    tall, base = smpl_synthetic(shape=betas).vertices[0], smpl_synthetic().vertices[0]
    assert (tall[:, 2].max() - tall[:, 2].min()) > (base[:, 2].max() - base[:, 2].min()) + 0.05
    # A direct file path works as well as smplx's folder layout.
    direct = SmplBody(SmplBodyConfig(model_path=str(smpl_dir / "smpl" / "SMPL_NEUTRAL.pkl")))
    assert direct.num_vertices == 6890


def test_smpl_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(BodyModelFileError, match="body.model_path") as err:
        SmplBody(SmplBodyConfig(model_path=""))
    assert "smpl.is.tue.mpg.de" in str(err.value)
    with pytest.raises(BodyModelFileError, match="SMPL_FEMALE.pkl"):
        SmplBody(SmplBodyConfig(model_path=str(tmp_path), gender="female"))
    with pytest.raises(BodyModelFileError, match="does not exist"):
        SmplBody(SmplBodyConfig(model_path=str(tmp_path / "nope.pkl")))


def test_smpl_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "SMPL_NEUTRAL.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(BodyModelFileError, match="not a valid SMPL model file"):
        SmplBody(SmplBodyConfig(model_path=str(bad)))
    truncated = tmp_path / "trunc.pkl"
    truncated.write_bytes(pickle.dumps({"v_template": 1})[:5])
    with pytest.raises(BodyModelFileError):
        SmplBody(SmplBodyConfig(model_path=str(truncated)))


def test_smpl_batches_of_shapes(smpl_synthetic):
    shapes = torch.randn(3, smpl_synthetic.shape_dim) * 0.5
    out = smpl_synthetic(shape=shapes)
    assert out.vertices.shape[0] == 3 and out.rest_vertices.shape[0] == 3
    single = smpl_synthetic(shape=shapes[1:2])
    assert torch.allclose(out.vertices[1], single.vertices[0], atol=1e-5)
