"""Rigs on the canonical skeleton: a body's own rig reproduces the body model's poses, a surface
made around the body (inflated, remeshed) is rigged by skin transfer and poses sensibly, bind
poses convert both ways, rigs save and load."""

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from avatar.body.skeleton import JOINT_INDEX, CanonicalPose, named_pose
from avatar.body.skinning import Rig, closest_point_weights, rig_from_body, rig_surface, transfer_skinning_weights

J = JOINT_INDEX
POSES = ["arms_raised", "squat", "kick"]
LEG_JOINTS = [J[f"{s}_{p}"] for s in ("left", "right") for p in ("hip", "knee", "ankle", "foot")]
HAND_JOINTS = [J["left_wrist"], J["right_wrist"]]


@pytest.mark.parametrize("pose_name", POSES)
def test_smpl_rig_reproduces_the_body_model(smpl_synthetic, pose_name):
    """SMPL is LBS on this very skeleton (the synthetic file has no pose blend shapes)."""
    rig = rig_from_body(smpl_synthetic)
    out = smpl_synthetic(pose=named_pose(pose_name))
    err = (rig.pose(pose_name)[0] - out.vertices[0]).norm(dim=-1)
    assert err.max() < 1e-3, f"{pose_name}: max {err.max():.2e} m"
    joints = rig.joint_transforms(pose_name)[0, :, :3, 3]
    assert torch.allclose(joints, out.joints[0], atol=1e-4)


@pytest.mark.parametrize("bind", ["t_pose", "a_pose"])
def test_anny_rig_reproduces_the_body_model(anny_low, bind):
    """Anny skins with its own ~160 bones; folded onto the 22 canonical joints, LBS differs
    only where bones of different joints blend. Measured (low-poly, T-pose bind): mean 0.6-1.2
    mm, max 1.4-3.4 cm over arms_raised/squat/kick; the joints agree exactly."""
    rig = rig_from_body(anny_low, bind_pose=bind)
    assert torch.allclose(rig.bind_joints, anny_low(pose=named_pose(bind)).joints[0], atol=1e-4)
    for pose_name in POSES:
        out = anny_low(pose=named_pose(pose_name))
        err = (rig.pose(pose_name)[0] - out.vertices[0]).norm(dim=-1)
        assert err.mean() < 0.005 and err.max() < 0.06, (
            f"{bind}->{pose_name}: mean {err.mean():.4f} max {err.max():.4f}"
        )
        assert torch.allclose(rig.joint_transforms(pose_name)[0, :, :3, 3], out.joints[0], atol=1e-4)


def test_joint_transforms_and_weights_are_well_formed(anny_low):
    rig = rig_from_body(anny_low)
    t = rig.joint_transforms(CanonicalPose.rest())
    assert t.shape == (1, 22, 4, 4)
    # In the bind pose every skinning matrix is the identity: posing to the bind pose is a no-op.
    assert torch.allclose(rig.skinning_matrices(rig.bind_pose), torch.eye(4).expand(1, 22, 4, 4), atol=1e-5)
    assert torch.allclose(rig.pose(rig.bind_pose)[0], rig.vertices, atol=1e-5)
    assert (rig.weights >= 0).all() and torch.allclose(rig.weights.sum(1), torch.ones(rig.num_vertices), atol=1e-5)


def _edge_jumps(weights: np.ndarray, mesh: trimesh.Trimesh) -> tuple[float, float]:
    """(mean, 99th percentile) of the L1 change of the weights along the mesh's edges."""
    e = mesh.edges_unique
    jumps = np.abs(weights[e[:, 0]] - weights[e[:, 1]]).sum(1)
    return float(jumps.mean()), float(np.quantile(jumps, 0.99))


@pytest.fixture(scope="module")
def inflated_surface(anny_low):
    """The body, subdivided twice (new vertices off the body's vertices) and inflated 2 cm."""
    body_rig = rig_from_body(anny_low)
    mesh = trimesh.Trimesh(body_rig.vertices.numpy(), body_rig.faces.numpy(), process=False)
    v, f = trimesh.remesh.subdivide(mesh.vertices, mesh.faces)
    v, f = trimesh.remesh.subdivide(v, f)
    sub = trimesh.Trimesh(v, f, process=False)
    surface = trimesh.Trimesh(sub.vertices + 0.02 * sub.vertex_normals, sub.faces, process=False)
    return body_rig, surface


def test_rigged_inflated_surface_poses_like_the_body(inflated_surface):
    body_rig, surface = inflated_surface
    rig = rig_surface(body_rig, surface.vertices, surface.faces)
    w = rig.weights.numpy()
    assert w.shape == (len(surface.vertices), 22)
    assert (w >= 0).all() and np.allclose(w.sum(1), 1.0, atol=1e-5)

    bind = rig.vertices
    posed = rig.pose("arms_raised")[0]
    joints = rig.joint_transforms("arms_raised")[0, :, :3, 3]
    assert (joints[HAND_JOINTS, 2] > joints[J["head"], 2]).all()
    # Hand region: surface points whose closest body point is mostly a wrist's.
    raw, dist, _ = closest_point_weights(body_rig, surface.vertices)
    # (inflating a 7 cm-edge mesh pushes a few vertices in creases towards other body parts)
    assert np.median(np.abs(dist - 0.02)) < 1e-3 and np.quantile(dist, 0.05) > 0.005
    hands = raw[:, HAND_JOINTS].sum(1) > 0.5
    assert hands.sum() > 50
    lift = (posed[hands, 2] - bind[hands, 2]).numpy()
    assert lift.min() > 0.3, f"hand vertices rose only {lift.min():.3f} m"
    # Legs do not move when only the arms do.
    legs = raw[:, LEG_JOINTS].sum(1) > 0.99
    assert (posed[legs] - bind[legs]).norm(dim=-1).max() < 1e-4
    # The whole surface stays on the posed body: close to 2 cm off the body's own posed mesh.
    body_posed = body_rig.pose("arms_raised")[0].numpy()
    posed_body_rig = Rig(
        torch.as_tensor(body_posed),
        body_rig.faces,
        body_rig.weights,
        body_rig.bind_pose,
        body_rig.rest_joints,
        body_rig.bind_joints,
    )
    _, d_posed, _ = closest_point_weights(posed_body_rig, posed)
    assert np.median(np.abs(d_posed - 0.02)) < 0.005 and np.quantile(d_posed, 0.99) < 0.06


def test_transferred_weights_are_smoother_than_a_nearest_vertex_copy(inflated_surface):
    """Measured on the twice-subdivided, 2 cm inflated low-poly body (L1 weight change along an
    edge, mean and 99th percentile): transfer 0.086 / 0.38, raw closest-point interpolation
    0.102 / 0.50, nearest-vertex copy 0.120 / 1.37 (its Voronoi patches jump at their borders)."""
    body_rig, surface = inflated_surface
    transferred = transfer_skinning_weights(body_rig, surface.vertices, surface.faces).numpy()
    raw = transfer_skinning_weights(body_rig, surface.vertices, surface.faces, smooth_length=0).numpy()
    _, nearest = cKDTree(body_rig.vertices.numpy()).query(surface.vertices)
    copied = body_rig.weights.numpy()[nearest]
    (m_t, q_t), (m_raw, q_raw), (m_copy, q_copy) = (_edge_jumps(x, surface) for x in (transferred, raw, copied))
    print(
        f"edge weight jumps (mean, 99%): transfer {m_t:.3f} {q_t:.3f}, closest point {m_raw:.3f} "
        f"{q_raw:.3f}, nearest vertex {m_copy:.3f} {q_copy:.3f}"
    )
    assert m_t < 0.8 * m_copy and q_t < 0.4 * q_copy
    assert m_t < m_raw and q_t < q_raw
    # ... while staying faithful to the body: mostly the same dominant joint as the copy.
    assert (transferred.argmax(1) == copied.argmax(1)).mean() > 0.9


def test_far_surface_weights_come_from_the_surroundings(anny_low):
    """A surface point far from the body (hair, a skirt) gets weights diffused from its
    neighbours on the surface, not copied from the closest body point."""
    body_rig = rig_from_body(anny_low)
    mesh = trimesh.Trimesh(body_rig.vertices.numpy(), body_rig.faces.numpy(), process=False)
    v = mesh.vertices + 0.01 * mesh.vertex_normals
    far = int(np.argmax(body_rig.weights[:, J["left_elbow"]].numpy()))
    v[far] += 0.3 * mesh.vertex_normals[far]  # a spike 30 cm out of the elbow
    weights = transfer_skinning_weights(body_rig, v, mesh.faces).numpy()
    neighbours = mesh.vertex_neighbors[far]
    assert np.abs(weights[far] - weights[neighbours].mean(0)).sum() < 0.3


def test_to_rest_round_trip(anny_low):
    a_rig = rig_from_body(anny_low, bind_pose="a_pose")
    t_rig = a_rig.to_rest("t_pose")
    # Towards the T-pose it matches the body's own T-pose (up to LBS vs Anny's skinning).
    t_body = anny_low(pose=CanonicalPose.rest()).vertices[0]
    assert (t_rig.vertices - t_body).norm(dim=-1).mean() < 0.005
    assert torch.allclose(t_rig.bind_pose.rotations, named_pose("t_pose").rotations)
    back = t_rig.to_rest("a_pose")
    assert (back.vertices - a_rig.vertices).norm(dim=-1).max() < 1e-5
    assert torch.allclose(back.bind_joints, a_rig.bind_joints, atol=1e-5)
    # From a T-pose bind, moving the mesh is forward LBS; and a rig posed from either bind
    # agrees on the joints.
    t_own = rig_from_body(anny_low)
    assert torch.allclose(t_own.to_rest("a_pose").vertices, t_own.pose("a_pose")[0], atol=1e-5)


def test_save_load_round_trip(anny_low, tmp_path):
    rig = rig_from_body(anny_low, bind_pose="a_pose")
    path = rig.save(tmp_path / "sub" / "avatar_rig.npz")
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    loaded = Rig.load(path)
    for name in ("vertices", "faces", "weights", "rest_joints", "bind_joints"):
        assert torch.equal(getattr(loaded, name), getattr(rig, name)), name
    assert torch.equal(loaded.bind_pose.rotations, rig.bind_pose.rotations)
    assert torch.allclose(loaded.pose("kick"), rig.pose("kick"))
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a rig file"):
        Rig.load(tmp_path / "other.npz")
