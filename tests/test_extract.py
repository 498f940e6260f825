"""Mesh extraction from an SDF (marching cubes) and visibility-aware vertex colours, on analytic
spheres whose answers are known."""

import numpy as np
import pytest
import torch
import trimesh

from avatar.neus.extract import camera_positions, extract_mesh, vertex_colors_with_visibility, vertex_visibility


def sphere(center, radius):
    center = torch.tensor(center, dtype=torch.float32)
    return lambda p: (p - center).norm(dim=-1) - radius


def test_sphere_radius_and_outward_normals():
    res, bound, radius = 64, 1.0, 0.6
    mesh = extract_mesh(sphere((0.1, -0.05, 0.0), radius), resolution=res, bound=bound, chunk=5000)
    step = 2 * bound / (res - 1)
    r = np.linalg.norm(mesh.vertices - [0.1, -0.05, 0.0], axis=1)
    assert np.abs(r - radius).max() < 0.5 * step
    assert mesh.is_winding_consistent and mesh.is_watertight
    assert mesh.volume > 0  # outward normals
    assert abs(mesh.volume - 4 / 3 * np.pi * radius**3) < 0.02 * 4 / 3 * np.pi * radius**3
    # Vertex normals point away from the centre.
    outward = ((mesh.vertices - [0.1, -0.05, 0.0]) * mesh.vertex_normals).sum(1) / r
    assert outward.min() > 0.9


def test_threshold_moves_the_level_set():
    mesh = extract_mesh(sphere((0, 0, 0), 0.5), resolution=48, threshold=0.1)
    assert abs(np.linalg.norm(mesh.vertices, axis=1).mean() - 0.6) < 0.01


def test_largest_component_is_kept():
    big, small = sphere((-0.4, 0, 0), 0.35), sphere((0.55, 0, 0), 0.2)
    both = lambda p: torch.minimum(big(p), small(p))  # noqa: E731
    kept = extract_mesh(both, resolution=64)
    assert kept.vertices[:, 0].max() < 0.0  # only the big sphere
    assert abs(np.linalg.norm(kept.vertices - [-0.4, 0, 0], axis=1).mean() - 0.35) < 0.01
    all_parts = extract_mesh(both, resolution=64, keep_largest_component=False)
    assert len(all_parts.split(only_watertight=False)) == 2


def test_empty_level_set_is_a_clear_error():
    with pytest.raises(ValueError, match="no surface at threshold=0.0"):
        extract_mesh(sphere((0, 0, 0), 3.0), resolution=16)  # everything inside
    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(lambda p: p.norm(dim=-1) + 1.0, resolution=16)  # everything outside


def test_open_border_is_warned_and_nan_is_an_error():
    with pytest.warns(UserWarning, match="border"):
        extract_mesh(sphere((0, 0, 0), 1.2), resolution=24)
    with pytest.raises(ValueError, match="non-finite"):
        extract_mesh(lambda p: p.norm(dim=-1) / 0 * 0, resolution=8)


def test_coarse_to_fine_sampling_gives_the_same_mesh_with_fewer_queries():
    """A small body with a finger thinner than a coarse cell, in a field that changes 3x faster
    than a distance: the box found on the coarse grid holds the whole surface, so the mesh is
    the full grid's, from a fraction of the queries."""
    torso = sphere((0.0, 0.0, -0.2), 0.25)

    def finger(p):  # a capsule of radius 0.012 (coarse cell at 48: 0.043) along +x from the torso
        t = p[:, 0].clamp(0.0, 0.6)
        return torch.stack([p[:, 0] - t, p[:, 1], p[:, 2] + 0.2], 1).norm(dim=-1) - 0.012

    queried = []

    def field(p):
        queried.append(len(p))
        return 3.0 * torch.minimum(torso(p), finger(p))

    full = extract_mesh(field, resolution=128, coarse_resolution=None, keep_largest_component=False)
    full_queries, queried[:] = sum(queried), []
    fast = extract_mesh(field, resolution=128, coarse_resolution=48, keep_largest_component=False)
    assert np.array_equal(fast.vertices, full.vertices) and np.array_equal(fast.faces, full.faces)
    assert full.vertices[:, 0].max() > 0.55  # the finger is in the mesh
    assert sum(queried) < 0.3 * full_queries


def view_color(points, view_dirs, normals):
    return 0.5 + 0.5 * view_dirs


def test_vertex_colors_come_from_views_on_the_vertex_side():
    """On a sphere a camera sees exactly the vertices on its side ((camera - p) . n > 0), so the
    colour must be the mean of 0.5 + 0.5 d over those cameras only."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    p = mesh.vertices
    n = p / np.linalg.norm(p, axis=1, keepdims=True)
    cams = camera_positions(mesh.bounds.mean(0), 2.5 * np.linalg.norm(p, axis=1).max(), 8)
    d = p[None] - cams[:, None]  # (C, V, 3) camera -> vertex
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    cos = -(d * n[None]).sum(-1)  # cosine between the normal and the direction to the camera
    # The Warp occlusion test alone: (camera, vertex) pairs agree with the round sphere except
    # near grazing, where the polygonal sphere (edges 0.15 rad) differs (measured: |cos| < 0.09).
    seen = vertex_visibility(mesh, cams)
    clear = np.abs(cos) > 0.1
    assert clear.mean() > 0.7 and (seen == (cos > 0))[clear].all()
    # Colours: the mean of 0.5 + 0.5 d over exactly the cameras that see the vertex.
    min_cos = 0.3
    colors = vertex_colors_with_visibility(mesh, view_color, n_views=8, min_cos=min_cos, chunk=100)
    assert colors.shape == (len(p), 3) and colors.min() >= 0 and colors.max() <= 1
    use = cos > min_cos
    expected = (use[..., None] * (0.5 + 0.5 * d)).sum(0) / use.sum(0)[:, None]
    ambiguous = (np.abs(cos - min_cos) < 0.02).any(0)  # vertex vs sphere normal
    assert (~ambiguous).mean() > 0.6
    assert np.abs(colors - expected).max(1)[~ambiguous].max() < 1e-4
    # With the facing test off, occlusion alone still never colours from the far side.
    colors = vertex_colors_with_visibility(mesh, view_color, n_views=8, min_cos=-1.0)
    assert ((2 * colors - 1) * n).sum(1).max() < 0.0


def test_occluded_vertices_use_the_head_on_fallback():
    """A sphere inside another: no camera sees the inner one; its colours use d = -normal."""
    outer = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    inner = trimesh.creation.icosphere(subdivisions=2, radius=0.2)
    mesh = trimesh.util.concatenate([outer, inner])
    n_outer = len(outer.vertices)
    seen = vertex_visibility(mesh, np.array([[0.0, -2.0, 0.0], [0.0, 2.0, 0.0]]))
    assert not seen[:, n_outer:].any()
    front = mesh.vertices[:n_outer, 1] < -0.1
    assert seen[0, :n_outer][front].all() and not seen[1, :n_outer][front].any()
    colors = vertex_colors_with_visibility(mesh, view_color, min_cos=-1.0)
    expected = 0.5 - 0.5 * mesh.vertex_normals[n_outer:]
    assert np.allclose(colors[n_outer:], expected, atol=1e-5)
