"""Tests of avatar.render: cameras, view sampling, backgrounds and the Warp mesh renderer."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from avatar.render import (
    BACKGROUND_KINDS,
    FRONT,
    UP,
    Cameras,
    MeshRenderConfig,
    MeshRenderer,
    ViewSamplingConfig,
    look_at,
    make_background,
    orbit_cameras,
    sample_views,
)


def sphere(subdivisions: int = 4, radius: float = 0.5, dtype=torch.float32):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(mesh.vertices, dtype=dtype), torch.tensor(mesh.faces, dtype=torch.int64)


def hit_points(out, cameras: Cameras, size: int) -> torch.Tensor:
    """World positions (B, H, W, 3) of the rendered surface, from the depth map."""
    origins, dirs = cameras.generate_rays(size, size)
    cos = (dirs * cameras.forward[:, None, None, :]).sum(-1, keepdim=True)
    return origins + dirs * out.depth.permute(0, 2, 3, 1) / cos


# ------------------------------------------------------------------------------------ cameras
def test_look_at_centres_target_and_keeps_up_up():
    eye = torch.tensor([[0.3, -2.0, 0.5], [1.5, 1.0, -0.4]])
    target = torch.tensor([0.1, 0.0, 0.2])
    cams = Cameras(look_at(eye, target), torch.tensor([60.0, 40.0]))
    rot = cams.c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(2), atol=1e-6)
    pix, depth = cams.project(target[None], 64, 96)
    assert torch.allclose(pix[:, 0], torch.tensor([48.0, 32.0]).expand(2, 2), atol=1e-4)
    assert torch.allclose(depth[:, 0], (eye - target).norm(dim=-1), atol=1e-6)
    above, _ = cams.project((target + 0.1 * torch.tensor(UP))[None], 64, 96)
    assert (above[:, 0, 1] < pix[:, 0, 1] - 1).all()  # image rows grow downwards
    assert torch.allclose(above[:, 0, 0], pix[:, 0, 0], atol=1e-4)  # no roll


def test_look_at_straight_down_is_a_valid_frame():
    c2w = look_at(torch.tensor([0.0, 0.0, 3.0]), torch.zeros(3))
    rot = c2w[0, :3, :3]
    assert torch.isfinite(c2w).all()
    assert torch.allclose(rot.T @ rot, torch.eye(3), atol=1e-6)
    assert torch.allclose(-rot[:, 2], torch.tensor([0.0, 0.0, -1.0]))


def test_generate_rays_geometry_and_consistency_with_project():
    cams = Cameras(look_at(torch.tensor([0.5, -2.0, 0.3]), torch.zeros(3)), torch.tensor(50.0))
    h, w = 33, 45
    origins, dirs = cams.generate_rays(h, w)
    assert origins.shape == dirs.shape == (1, h, w, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(1, h, w), atol=1e-6)
    assert torch.allclose(origins, cams.position[:, None, None].expand_as(origins))
    assert torch.allclose(dirs[0, h // 2, w // 2], cams.forward[0], atol=1e-6)  # centre pixel
    # The middle pixel of the top row is (1 - 1/H) of the half field of view above the axis.
    top_angle = torch.acos((dirs[0, 0, w // 2] * cams.forward[0]).sum())
    expected = math.atan((1 - 1 / h) * math.tan(math.radians(25)))
    assert abs(top_angle.item() - expected) < 1e-5
    # Projecting points along the rays lands on the pixel centres.
    pix, depth = cams.project((origins + 2.0 * dirs).reshape(1, -1, 3), h, w)
    rows, cols = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    assert torch.allclose(pix[0], torch.stack([cols, rows], -1).reshape(-1, 2), atol=1e-3)
    assert (depth > 0).all()


def test_cameras_batch_api():
    cams = orbit_cameras(5, 2.0, 10.0, (0.0, 0.0, 0.0), 45.0)
    assert len(cams) == 5
    assert len(cams[1]) == 1 and torch.equal(cams[1].c2w, cams.c2w[1:2])
    assert len(cams[-1]) == 1 and torch.equal(cams[-1].c2w, cams.c2w[4:])
    assert len(cams[1:4]) == 3 and torch.equal(cams[1:4].fov_deg, torch.full((3,), 45.0))
    assert cams.to(dtype=torch.float64).c2w.dtype == torch.float64
    with pytest.raises(ValueError):
        Cameras(torch.eye(4), torch.tensor(60.0))


def test_orbit_cameras_start_in_front_and_turn_counter_clockwise():
    cams = orbit_cameras(4, 3.0, 0.0, (0.0, 0.0, 1.0), 60.0)
    expected = torch.tensor([[0.0, -3.0, 1.0], [3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [-3.0, 0.0, 1.0]])
    assert torch.allclose(cams.position, expected, atol=1e-5)
    raised = orbit_cameras(1, 2.0, 30.0, (0.0, 0.0, 0.0), 60.0)
    assert abs(raised.position[0, 2].item() - 1.0) < 1e-5  # 2 sin(30)


# ------------------------------------------------------------------------------ view sampling
def test_sample_views_statistics_match_config():
    cfg = ViewSamplingConfig()
    target, face = torch.tensor([0.0, 0.0, 0.1]), torch.tensor([0.0, 0.0, 0.6])
    n = 20000
    cams, info = sample_views(n, cfg, torch.Generator().manual_seed(0), target, face)
    is_face, is_back = info["is_face"], info["is_back"]
    body = ~is_face
    assert abs(is_face.float().mean().item() - 1 / cfg.face_every) < 0.015
    # Back views: |theta| > 90 deg with theta ~ N(0, 60 deg): P = 2 (1 - Phi(1.5)) = 0.1336.
    assert abs(is_back[body].float().mean().item() - 0.1336) < 0.015
    assert not (is_back & is_face).any()

    distance = (cams.position - info["target"]).norm(dim=-1)
    assert torch.allclose(distance, info["distance"], atol=1e-5)
    lo, hi = cfg.distance_range
    assert distance[body].min() >= lo - 1e-5 and distance[body].max() <= hi + 1e-5
    assert abs(distance[body].mean().item() - (lo + hi) / 2) < 0.02
    assert torch.allclose(distance[is_face], torch.full_like(distance[is_face], cfg.face_distance))

    offset = info["target"][body] - target
    assert offset.abs().max() <= cfg.target_jitter_clip + 1e-6
    assert abs(offset.std().item() - cfg.target_jitter_std) < 0.01
    face_aim = face + cfg.face_forward_offset * torch.tensor(FRONT)
    assert torch.allclose(info["target"][is_face], face_aim.expand(int(is_face.sum()), 3))

    # Every camera looks at its target; back views sit behind the body's frontal plane.
    to_target = torch.nn.functional.normalize(info["target"] - cams.position, dim=-1)
    assert torch.allclose((to_target * cams.forward).sum(-1), torch.ones(n), atol=1e-5)
    behind = ((cams.position - info["target"]) * torch.tensor(FRONT)).sum(-1) < 0
    assert torch.equal(behind[body], is_back[body])
    # Face views stay within 90 deg of the front; their polar angle has std 15 deg.
    cos_front = ((cams.position - info["target"]) * torch.tensor(FRONT)).sum(-1) / distance
    face_polar = torch.rad2deg(torch.acos(cos_front[is_face].clamp(-1, 1)))
    assert face_polar.max() <= 90 + 1e-3
    assert abs(face_polar.pow(2).mean().sqrt().item() - cfg.face_polar_std_deg) < 1.0

    # Reported angles reproduce the camera positions (module-docstring convention).
    az, el = torch.deg2rad(info["azimuth_deg"]), torch.deg2rad(info["elevation_deg"])
    direction = torch.stack([az.sin() * el.cos(), -az.cos() * el.cos(), el.sin()], -1)
    assert torch.allclose(info["target"] + distance[:, None] * direction, cams.position, atol=1e-4)
    assert torch.allclose(info["light_dir"].norm(dim=-1), torch.ones(n), atol=1e-5)
    assert info["ambient"].min() >= 0 and info["ambient"].max() <= 0.2
    assert torch.equal(cams.fov_deg, torch.full((n,), cfg.fov_deg))


def test_sample_views_face_schedule_and_reproducibility():
    cfg = ViewSamplingConfig()
    target, face = torch.zeros(3), torch.tensor([0.0, 0.0, 0.6])
    schedule = [
        sample_views(1, cfg, torch.Generator().manual_seed(s), target, face, step=s)[1]["is_face"].item()
        for s in range(8)
    ]
    assert schedule == [True, False, False, False, True, False, False, False]  # AvatarCLIP's i % 4
    _, info = sample_views(8, cfg, torch.Generator().manual_seed(0), target, face, step=3)
    assert info["is_face"].tolist() == [True, False, False, False] * 2
    _, info = sample_views(64, cfg, torch.Generator().manual_seed(0), target, None)
    assert not info["is_face"].any()

    a, info_a = sample_views(16, cfg, torch.Generator().manual_seed(7), target, face)
    b, info_b = sample_views(16, cfg, torch.Generator().manual_seed(7), target, face)
    c, _ = sample_views(16, cfg, torch.Generator().manual_seed(8), target, face)
    assert torch.equal(a.c2w, b.c2w) and all(torch.equal(info_a[k], info_b[k]) for k in info_a)
    assert not torch.allclose(a.c2w, c.c2w)


# -------------------------------------------------------------------------------- backgrounds
@pytest.mark.parametrize("kind", BACKGROUND_KINDS)
def test_background_shapes_and_range(kind):
    bg = make_background(kind, 3, 40, 56, torch.Generator().manual_seed(0))
    assert bg.shape == (3, 3, 40, 56) and bg.dtype == torch.float32
    assert bg.min() >= 0 and bg.max() <= 1


def test_plain_and_noise_backgrounds():
    assert torch.equal(make_background("white", 2, 8, 8), torch.ones(2, 3, 8, 8))
    assert torch.equal(make_background("black", 2, 8, 8), torch.zeros(2, 3, 8, 8))
    noise = make_background("noise", 2, 64, 64, torch.Generator().manual_seed(0))
    assert abs(noise.mean().item() - 0.5) < 0.01 and abs(noise.std().item() - 12**-0.5) < 0.01
    assert not torch.allclose(noise[:, 0], noise[:, 1])  # colour noise, not grey


def _two_color_segment(image: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(spread along the main colour axis, spread off it, positions along it in [0, 1])."""
    pixels = image.reshape(3, -1).T
    centred = pixels - pixels.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    along = centred @ vh[0]
    return s[0].item(), s[1].item(), (along - along.min()) / (along.max() - along.min())


def test_checkerboard_has_two_random_colors_and_is_blurred():
    boards = make_background("checkerboard", 16, 224, 224, torch.Generator().manual_seed(1))
    blurred = 0
    for board in boards:
        main, off, position = _two_color_segment(board)
        # A blurred two-colour board is a convex mix of its two colours: a line in RGB space.
        assert off < 1e-3 * main
        # Both colours cover large areas (the cells) ...
        assert (position < 0.1).float().mean() > 0.15 and (position > 0.9).float().mean() > 0.15
        # ... and blurring leaves intermediate mixtures at the cell edges.
        blurred += bool(((position > 0.05) & (position < 0.95)).any())
    assert blurred >= 10  # sigma ~ U(0.1, 2): the smallest sigmas barely blur
    colors = boards.reshape(16, 3, -1).amax(-1)
    assert colors.std(0).min() > 0.05  # the colours change from board to board


def test_random_background_mixes_the_four_kinds():
    bgs = make_background("random", 80, 24, 24, torch.Generator().manual_seed(3))
    white = (bgs == 1).flatten(1).all(1)
    black = (bgs == 0).flatten(1).all(1)
    flat = bgs.flatten(2)
    grey_line = torch.stack([torch.linalg.svdvals(f.T - f.T.mean(0))[1] < 1e-3 for f in flat])
    checker = grey_line & ~white & ~black
    noise = ~(white | black | checker)
    counts = [int(x.sum()) for x in (white, black, checker, noise)]
    assert all(5 <= c <= 40 for c in counts), counts


def test_unknown_background_names_valid_kinds():
    with pytest.raises(ValueError, match="checkerboard"):
        make_background("plaid", 1, 8, 8)


# ---------------------------------------------------------------------------------- rendering
@pytest.fixture(scope="module")
def renderer() -> MeshRenderer:
    return MeshRenderer(MeshRenderConfig(height=65, width=65))


def front_camera(distance: float = 1.5, fov: float = 60.0) -> Cameras:
    return orbit_cameras(1, distance, 0.0, (0.0, 0.0, 0.0), fov)


def test_sphere_silhouette_depth_and_normals(renderer):
    verts, faces = sphere(subdivisions=4, radius=0.5)
    cams = front_camera(1.5)
    out = renderer.render(verts, faces, cams)
    size = renderer.cfg.height
    assert out.rgb.shape == (1, 3, size, size) and out.alpha.shape == (1, 1, size, size)
    assert out.depth.shape == (1, 1, size, size) and out.normal.shape == (1, 3, size, size)
    assert out.face_id.shape == (1, size, size)
    assert torch.equal(out.alpha[:, 0] > 0, out.face_id >= 0)

    # Perspective silhouette of a sphere: a disc of radius r / sqrt(d^2 - r^2) on the z=1 plane.
    disc = math.pi * 0.5**2 / (1.5**2 - 0.5**2)
    expected = disc / (2 * math.tan(math.radians(30))) ** 2
    assert abs(out.alpha.mean().item() / expected - 1) < 0.03

    assert abs(out.depth[0, 0, size // 2, size // 2].item() - 1.0) < 2e-3  # distance - r
    assert (out.depth[out.alpha == 0] == 0).all()

    hit = out.alpha[0, 0] > 0
    points = hit_points(out, cams, size)[0][hit]
    normals = out.normal[0].permute(1, 2, 0)[hit]
    radial = torch.nn.functional.normalize(points, dim=-1)
    assert ((normals * radial).sum(-1) > math.cos(math.radians(3))).all()
    assert ((normals * (cams.position[0] - points)).sum(-1) > 0).all()  # facing the camera
    assert (out.normal[0].permute(1, 2, 0)[~hit] == 0).all()


def test_vertex_colors_lighting_and_flat_mode(renderer):
    verts, faces = sphere(subdivisions=3)
    cams = front_camera()
    red = torch.tensor([1.0, 0.0, 0.0]).expand(len(verts), 3)
    out = renderer.render(verts, faces, cams, colors=red)
    hit = out.alpha[0, 0] > 0
    rgb = out.rgb[0].permute(1, 2, 0)
    assert (rgb[hit][:, 0] >= renderer.cfg.ambient - 1e-6).all() and (rgb[hit][:, 1:] == 0).all()
    assert (rgb[~hit] == 1).all()  # white background

    cfg = renderer.cfg
    back = renderer.render(verts, faces, cams, colors=red, light_dir=cams.forward[0])  # from behind
    back_rgb = back.rgb[0].permute(1, 2, 0)[hit]
    assert torch.allclose(back_rgb[:, 0], torch.full_like(back_rgb[:, 0], cfg.ambient))  # ambient only
    assert back_rgb[:, 0].mean() < rgb[hit][:, 0].mean() - 0.3
    # Head-on light: the sphere's centre gets ambient + diffuse, and shading falls off outwards.
    centre = rgb[cfg.height // 2, cfg.width // 2, 0].item()
    assert abs(centre - (cfg.ambient + cfg.diffuse)) < 0.01

    flat = renderer.render(verts, faces, cams, shading=False)
    assert torch.allclose(flat.rgb[0].permute(1, 2, 0)[hit], torch.full((int(hit.sum()), 3), cfg.default_color))
    dim = renderer.render(verts, faces, cams, colors=red, ambient=0.1, diffuse=0.2)
    assert abs(dim.rgb[0, 0, cfg.height // 2, cfg.width // 2].item() - 0.3) < 0.01


def test_background_compositing_follows_alpha(renderer):
    verts, faces = sphere(subdivisions=2)
    bg = make_background("noise", 2, 65, 65, torch.Generator().manual_seed(0))
    out = renderer.render(verts, faces, orbit_cameras(2, 1.5, 0.0, (0, 0, 0), 60.0), background=bg)
    miss = out.alpha.expand_as(bg) == 0
    assert torch.equal(out.rgb[miss], bg[miss])
    assert not torch.equal(out.rgb[~miss], bg[~miss])
    blue = renderer.render(verts, faces, front_camera(), background=torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(blue.rgb[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_turntable_azimuth_zero_sees_the_front_unmirrored(renderer):
    verts, faces = sphere(subdivisions=3)
    # Colour by direction: front (-Y) red, back (+Y) green, the body's left (+X) blue.
    colors = torch.stack([(-verts[:, 1]).clamp(min=0), verts[:, 1].clamp(min=0), verts[:, 0].clamp(min=0)], -1) * 2
    out = renderer.render(
        verts, faces, orbit_cameras(4, 1.5, 0.0, (0, 0, 0), 60.0), colors=colors, shading=False, background="black"
    )
    c = renderer.cfg.height // 2
    centre = out.rgb[:, :, c, c]
    assert centre[0].argmax() == 0  # azimuth 0: the front
    assert centre[1].argmax() == 2  # azimuth 90: the left side
    assert centre[2].argmax() == 1  # azimuth 180: the back
    # Seen from the front, the body's left (+X) is on the image's right.
    blue = out.rgb[0, 2]
    assert blue[:, c + 5 :].sum() > 10 * blue[:, : c - 5].sum()


def test_batched_views_equal_single_views(renderer):
    verts, faces = sphere(subdivisions=3)
    colors = torch.rand(len(verts), 3, generator=torch.Generator().manual_seed(0))
    cams = orbit_cameras(3, 1.6, 20.0, (0.0, 0.1, 0.0), 50.0, start_azimuth_deg=15.0)
    batched = renderer.render(verts, faces, cams, colors=colors)
    per_mesh = torch.stack([verts + torch.tensor([0.1 * i, 0.0, 0.0]) for i in range(3)])
    batched_meshes = renderer.render(per_mesh, faces, cams, colors=colors)
    for i in range(3):
        single = renderer.render(verts, faces, cams[i], colors=colors)
        moved = renderer.render(per_mesh[i], faces, cams[i], colors=colors)
        for field in ("rgb", "alpha", "depth", "normal", "face_id"):
            assert torch.allclose(getattr(batched, field)[i], getattr(single, field)[0], atol=1e-6), field
            assert torch.allclose(getattr(batched_meshes, field)[i], getattr(moved, field)[0], atol=1e-6), field
    assert not torch.equal(batched_meshes.face_id[2], batched.face_id[2])


@pytest.mark.parametrize("policy", ["refit", "rebuild"])
def test_moving_vertices_updates_the_bvh(policy):
    renderer = MeshRenderer(MeshRenderConfig(height=48, width=48, bvh_update=policy))
    fresh = MeshRenderer(MeshRenderConfig(height=48, width=48))
    verts, faces = sphere(subdivisions=3, radius=0.3)
    cams = front_camera()
    first = renderer.render(verts, faces, cams)
    mesh_before = renderer._bvhs[0].mesh
    moved = verts * torch.tensor([1.3, 1.0, 0.8]) + torch.tensor([0.25, 0.0, 0.1])
    second = renderer.render(moved, faces, cams)
    assert (renderer._bvhs[0].mesh is mesh_before) == (policy == "refit")
    expected = fresh.render(moved, faces, cams)
    assert not torch.equal(first.alpha, second.alpha)
    assert torch.equal(second.face_id, expected.face_id)
    assert torch.allclose(second.rgb, expected.rgb) and torch.allclose(second.depth, expected.depth)
    # New topology on the same slot: rebuilt, not refitted.
    other_verts, other_faces = sphere(subdivisions=2, radius=0.3)
    third = renderer.render(other_verts, other_faces, cams)
    assert torch.equal(third.face_id, fresh.render(other_verts, other_faces, cams).face_id)


def test_gradients_match_finite_differences():
    renderer = MeshRenderer(MeshRenderConfig(height=24, width=24))
    verts, faces = sphere(subdivisions=1, radius=0.5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    colors = torch.rand(len(verts), 3, generator=gen, dtype=torch.float64)
    cams = orbit_cameras(2, 1.5, 20.0, (0.0, 0.0, 0.0), 60.0, start_azimuth_deg=10.0).to(dtype=torch.float64)
    light = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)
    weights = torch.rand(2, 3, 24, 24, generator=gen, dtype=torch.float64)

    def loss(v, c, mask):
        out = renderer.render(v, faces, cams, colors=c, light_dir=light)
        return (out.rgb * weights * mask).sum(), out.face_id

    base = renderer.render(verts, faces, cams, colors=colors, light_dir=light)
    assert base.rgb.dtype == torch.float64
    eps = 1e-6
    checked = 0
    for vertex, axis in [(0, 0), (3, 1), (5, 2), (7, 0), (9, 1), (10, 2)]:
        plus, minus = verts.clone(), verts.clone()
        plus[vertex, axis] += eps
        minus[vertex, axis] -= eps
        # Interior pixels: those whose visible triangle does not change under the perturbation.
        _, fid_plus = loss(plus, colors, 0.0)
        _, fid_minus = loss(minus, colors, 0.0)
        mask = ((base.face_id >= 0) & (fid_plus == base.face_id) & (fid_minus == base.face_id))[:, None]
        v = verts.clone().requires_grad_()
        c = colors.clone().requires_grad_()
        value, _ = loss(v, c, mask)
        value.backward()
        numeric_v = (loss(plus, colors, mask)[0] - loss(minus, colors, mask)[0]) / (2 * eps)
        assert abs(v.grad[vertex, axis].item() - numeric_v.item()) < 1e-5 * max(1.0, abs(numeric_v.item()))
        c_plus, c_minus = colors.clone(), colors.clone()
        c_plus[vertex, axis] += eps
        c_minus[vertex, axis] -= eps
        numeric_c = (loss(verts, c_plus, mask)[0] - loss(verts, c_minus, mask)[0]) / (2 * eps)
        assert abs(c.grad[vertex, axis].item() - numeric_c.item()) < 1e-5 * max(1.0, abs(numeric_c.item()))
        checked += int(v.grad[vertex, axis] != 0)
    assert checked >= 4  # most of the probed vertices are visible and really get gradients


def test_render_rejects_mismatched_batches(renderer):
    verts, faces = sphere(subdivisions=1)
    with pytest.raises(ValueError):
        renderer.render(verts.expand(2, -1, -1), faces, orbit_cameras(3, 1.5, 0.0, (0, 0, 0), 60.0))
