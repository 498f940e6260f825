"""The appearance stage end to end on the low-poly body: NeuS init, guided steps, export, rig."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh
from hydra.errors import ConfigCompositionException
from test_guidance import clip_checkpoint, open_clip_checkpoint  # noqa: F401  (fixtures)

from avatar.body.regions import REGIONS, vertex_regions
from avatar.body.skinning import Rig
from avatar.engine.runner import run
from avatar.stages.appearance import resolution_for_rays

from helpers import LOW_POLY, clip_backend_overrides, compose_cfg, run_train

TINY = [
    "stage=appearance",
    f"body.topology={LOW_POLY}",
    "stage.init_steps=60",
    "stage.init_cache=false",
    "stage.volume.compile=false",  # a few steps: compiling would cost more than it saves
    "stage.max_ray_num=400",
    "stage.proposal_resolution=40",
    "stage.proposal_refresh_every=2",
    "stage.export_resolution=64",
    "stage.export_views=4",
    "stage.val_size=24",
    "stage.val_views=2",
    "stage.turntable_frames=3",
    "trainer.max_steps=3",
    "trainer.val_every_n_steps=2",
    "trainer.checkpoint_every_n_steps=3",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


def test_adaptive_resolution_keeps_rays_within_budget():
    assert resolution_for_rays(12544, 1, 1.0, 512) == 112  # the paper: 112 x 112 without a mask
    size = resolution_for_rays(12544, 1, 0.25, 512)
    assert size == 224 and size * size * 0.25 <= 12544
    assert resolution_for_rays(12544, 1, 1e-6, 300) == 300  # capped
    assert resolution_for_rays(7000, 2, 1.0, 512) * resolution_for_rays(7000, 2, 1.0, 512) * 2 <= 7000


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("appearance")
    result = run(compose_cfg(run_dir, *TINY))
    return run_dir, result


@pytest.mark.slow
def test_outputs_are_a_colored_world_space_mesh(tiny_run, anny_low):
    run_dir, result = tiny_run
    mesh = trimesh.load(run_dir / "avatar.ply", process=False)
    assert len(mesh.vertices) > 200 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    for suffix in ("obj", "glb"):
        assert (run_dir / f"avatar.{suffix}").stat().st_size > 1000
    # World coordinates: the avatar stands where the body (T-pose) stands, at its size.
    body = anny_low().vertices[0].numpy()
    extent, body_extent = np.ptp(mesh.vertices, axis=0), np.ptp(body, axis=0)
    assert np.allclose(extent, body_extent, rtol=0.15, atol=0.03), (extent, body_extent)
    assert set(result["region_rgb"]) >= {"torso", "legs", "head"}
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 3
    assert len(list((run_dir / "images").glob("val_step*.png"))) >= 2
    assert (run_dir / "timelapse.mp4").stat().st_size > 0 and (run_dir / "turntable.mp4").stat().st_size > 0


def test_exported_rig_poses_the_avatar(tiny_run):
    run_dir, _ = tiny_run
    rig = Rig.load(run_dir / "avatar_rig.npz")
    assert rig.weights.shape == (rig.vertices.shape[0], 22)
    assert torch.allclose(torch.as_tensor(rig.weights).sum(1), torch.ones(rig.vertices.shape[0]), atol=1e-4)
    regions = vertex_regions(torch.as_tensor(rig.weights))
    rest = torch.as_tensor(rig.vertices)
    posed = rig.pose("arms_raised")[0]
    hands = regions == REGIONS.index("hands")
    legs = regions == REGIONS.index("legs")
    head_top = rest[:, 2].max()
    assert (posed[hands, 2] > head_top).float().mean() > 0.8  # hands above the head
    assert (posed[legs] - rest[legs]).norm(dim=-1).max() < 1e-3  # legs did not move


@pytest.mark.slow
def test_guidance_gradients_reach_the_texture_head_only(tmp_path):
    """The guidance terms train head B (the exported texture) and the geometry, never head A."""
    from avatar.stages import build_stage

    cfg = compose_cfg(
        tmp_path, *TINY, "stage.lambda_coarse=0", "stage.lambda_mask=0", "stage.lambda_body_surface=0",
        "stage.lambda_unnamed_color=0",
    )  # fmt: skip
    stage = build_stage(cfg)
    stage.setup("fit")
    losses = stage.compute_losses(0)
    assert set(losses) == {"eikonal", "guidance_texture", "guidance_geometry"}
    (losses["guidance_texture"] + losses["guidance_geometry"]).backward()
    color = stage.fields.color_net

    def grad_norm(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(color.head_b) > 0 and grad_norm(color.head_a) == 0
    assert grad_norm(stage.fields.sdf_net) > 0  # textureless renders shape the geometry


@pytest.mark.slow  # ~20 s: a NeuS initialisation and 80 optimisation steps
def test_body_priors_hold_the_surface_and_the_unnamed_regions_colors(tmp_path):
    """The body priors: |SDF| on the coarse body's surface, and head B held to the coarse colours
    only where the prompt names nothing: for "a person in a red shirt" the face and hands count,
    the torso does not. Optimised alone, they bring the head's colour to its target."""
    from avatar.body.regions import REGIONS, SKIN_TONE, vertex_regions
    from avatar.stages import build_stage

    cfg = compose_cfg(
        tmp_path, *TINY, "prompt.appearance=a person in a red shirt", "stage.lambda_body_surface=1",
        "stage.lambda_unnamed_color=1", "stage.body_points=1024",
    )  # fmt: skip
    stage = build_stage(cfg)
    stage.setup("fit")
    regions = vertex_regions(stage.body.skinning_weights.float())
    head, torso = regions == REGIONS.index("head"), regions == REGIONS.index("torso")

    def prior(step=0):
        return float(stage.body_priors(stage.step_generator(step))["unnamed_color"].detach())

    grey = prior()
    stage.coarse_colors[torso] = torch.tensor([0.0, 1.0, 0.0])  # the shirt's region: not in the term
    assert prior() == pytest.approx(grey, abs=1e-6)
    stage.coarse_colors[:] = torch.tensor(SKIN_TONE)  # the face's region is
    assert prior() > grey + 0.01

    def head_b(mask):
        points = stage.coarse_vertices[mask]
        _, features, grad = stage.fields.sdf_features_gradient(points, create_graph=False)
        return stage.fields.colors(points, grad, -torch.nn.functional.normalize(grad, dim=-1), features)[1].mean(0)

    def optimise(term: str, steps: int = 40) -> tuple[float, float]:
        optimiser = torch.optim.Adam(stage.fields.parameters(), lr=3e-3)
        values = []
        for step in range(steps):
            loss = stage.body_priors(stage.step_generator(step))[term]
            values.append(float(loss.detach()))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return values[0], values[-1]

    head_before = head_b(head)
    first, last = optimise("unnamed_color")
    tone = torch.tensor(SKIN_TONE)
    assert (head_b(head) - tone).abs().mean() < 0.5 * (head_before - tone).abs().mean() and last < 0.5 * first
    with torch.no_grad():  # the surface 5 cm (object units) inside the body: the prior brings it back
        stage.fields.sdf_net.layers[-1].bias[0] += 0.05
    first, last = optimise("body_surface")
    assert first > 0.04 and last < 0.5 * first


def test_the_surface_prior_sees_a_lump_grown_off_the_body(tmp_path):
    """``body_surface`` compares the SDF with the body's signed distance on the body and around
    it: a field equal to the body's SDF costs nothing; one with a lump grown in front of the chest
    (off the surface, where |SDF| on the surface alone cannot see it) costs."""
    from avatar.body.regions import REGIONS, vertex_regions
    from avatar.neus.mesh_sdf import MeshQuery
    from avatar.stages import build_stage

    cfg = compose_cfg(
        tmp_path, *TINY, "stage.init=none", "stage.lambda_body_surface=1", "stage.lambda_unnamed_color=0",
        "stage.body_points=8192",
    )  # fmt: skip
    stage = build_stage(cfg)
    stage.setup("fit")
    vertices, faces = stage.body_cpu
    body = MeshQuery(vertices, faces)
    torso = vertices[vertex_regions(stage.body.skinning_weights.float()) == REGIONS.index("torso")]
    chest = torso[torso[:, 1].argmin()]  # the body faces -Y
    centre = chest + torch.tensor([0.0, -0.12, 0.0])

    def prior(lump: bool) -> float:
        def sdf(x):
            d = body.query(x)[0]
            return torch.minimum(d, (x - centre).norm(dim=-1) - 0.1) if lump else d

        stage.fields.sdf = sdf
        return sum(float(stage.body_priors(stage.step_generator(step))["body_surface"]) for step in range(4)) / 4

    assert prior(lump=False) < 1e-6
    assert prior(lump=True) > 1e-4  # 2e-4: a few % of the points around the body fall in the lump


def test_paper_switches_turn_terms_off(tmp_path):
    from avatar.stages import build_stage

    cfg = compose_cfg(tmp_path, *TINY, "stage.textureless_render=false", "stage.lambda_mask=0", "stage.init=none")
    stage = build_stage(cfg)
    stage.setup("fit")
    losses = stage.compute_losses(0)
    assert "guidance_geometry" not in losses and "mask" not in losses and "guidance_texture" in losses


def test_face_and_back_prompts(tmp_path):
    from avatar.stages import build_stage

    stage = build_stage(compose_cfg(tmp_path, *TINY, "prompt.appearance=a person in a red shirt"))
    info = {"is_face": torch.tensor([True, False, False]), "is_back": torch.tensor([False, True, False])}
    assert stage.prompts(info) == [
        "the face of a person in a red shirt",
        "the back of a person in a red shirt",
        "a 3d rendering of a person in a red shirt in unreal engine",
    ]
    stage = build_stage(compose_cfg(tmp_path, *TINY, "stage.face_prompt=false", "stage.back_prompt=false"))
    assert len(set(stage.prompts(info))) == 1


def test_bad_inputs_are_named(tmp_path):
    from avatar.stages import build_stage

    with pytest.raises(ValueError, match="prompt.appearance"):
        build_stage(compose_cfg(tmp_path, *TINY, "prompt.appearance=' '"))
    with pytest.raises(ConfigCompositionException, match="stage.init"):  # an Enum field: at composition
        build_stage(compose_cfg(tmp_path, *TINY, "stage.init=magic"))
    with pytest.raises(ConfigCompositionException, match="stage.coarse_color"):
        build_stage(compose_cfg(tmp_path, *TINY, "stage.coarse_color=purple"))
    with pytest.raises(FileNotFoundError, match="stage.shape_dir"):
        build_stage(compose_cfg(tmp_path, *TINY, f"stage.shape_dir={tmp_path}"))


def test_ablation_ladder_composes(tmp_path):
    from avatar.config import validate_config

    expected = {
        "1_no_init": ("none", False, False, False),
        "3_background": ("mesh", True, False, False),
        "5_prompts": ("mesh", True, True, True),
    }
    for step, (init, background, textureless, face) in expected.items():
        cfg = compose_cfg(tmp_path, "experiment=appearance_ablation", f"+appearance_ladder={step}")
        validate_config(cfg)
        s = cfg.stage
        assert (s.init, s.background_augmentation, s.textureless_render, s.face_prompt) == (
            init,
            background,
            textureless,
            face,
        )


def test_presets_size_the_stage(tmp_path):
    paper = compose_cfg(tmp_path, "stage=appearance", "preset=paper")
    small = compose_cfg(tmp_path, "stage=appearance", "preset=small")
    cpu = compose_cfg(tmp_path, "stage=appearance")
    assert (paper.stage.fields.sdf_hidden, paper.stage.max_ray_num, paper.trainer.max_steps) == (256, 12544, 30000)
    assert (small.stage.fields.sdf_hidden, small.stage.fields.sdf_layers, small.stage.max_ray_num) == (128, 3, 7000)
    assert cpu.stage.max_ray_num < small.stage.max_ray_num
    # Other stages keep the preset's generic values.
    assert compose_cfg(tmp_path, "stage=pose_fit", "preset=paper").trainer.max_steps == 30000


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["clip", "open_clip"])
def test_appearance_runs_with_clip_backends(tmp_path, backend, request):
    """Structural: the stage runs with CLIP / OpenCLIP loaded through their real loaders from
    tiny synthetic checkpoints (no real weights exist offline)."""
    guidance = clip_backend_overrides(backend, request)
    result = run(compose_cfg(tmp_path, *TINY, *guidance, "trainer.max_steps=2"))
    assert np.isfinite(result["guidance_loss_final"])
    # A sweep's objective is the independent scorer's (mini_scorer), never the guiding model's.
    assert result["objective"] == result["scorer_loss_final"] != result["guidance_loss_final"]


@pytest.mark.slow
def test_cli_run(tmp_path):
    """As a user runs it: train.py with Hydra overrides."""
    run_train(*TINY, "trainer.max_steps=1", f"hydra.run.dir={tmp_path}")
    assert (tmp_path / "avatar.glb").is_file() and (tmp_path / "avatar_rig.npz").is_file()


@pytest.mark.slow
def test_avatar_made_in_a_pose_is_exported_in_the_t_pose(tmp_path):
    run(
        compose_cfg(
            tmp_path,
            *TINY,
            "stage.bind_pose=a_pose",
            "stage.export_resolution=96",
            "trainer.max_steps=1",
            "trainer.val_every_n_steps=0",
        )
    )
    rig = Rig.load(tmp_path / "avatar_rig.npz")
    assert torch.allclose(rig.bind_pose.rotations[:, 1:], torch.zeros(1, 21, 3), atol=1e-6)
    regions = vertex_regions(torch.as_tensor(rig.weights))
    vertices = torch.as_tensor(rig.vertices)
    hands = vertices[regions == REGIONS.index("hands")]
    torso = vertices[regions == REGIONS.index("torso")]
    # T-pose: the hands are level with the upper torso, not hanging at the hips as in the A-pose.
    assert hands[:, 2].mean() > torso[:, 2].mean()
    assert np.ptp(trimesh.load(tmp_path / "avatar.ply", process=False).vertices[:, 0]) > 1.3  # arms spread


# 300 + 300 NeuS steps: minutes on the 2-core machines this project had, 563 s and once >600 s on
# a slower 2.4 GHz EPYC (2026-11-26, alone): the suite-wide 600 s guard against hangs is too tight.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quality_check_red_shirt_blue_trousers(tmp_path):
    """Issue 4's check: with the shipped offline guidance model, "a person in a red shirt and blue
    trousers" gives an exported avatar whose torso vertices are mostly red and whose leg vertices
    are mostly blue (regions from the transferred skinning weights). cpu preset, low-poly body."""
    result = run(compose_cfg(
        tmp_path, "stage=appearance", f"body.topology={LOW_POLY}", "prompt.appearance=a person in a red shirt and blue trousers",
        "trainer.max_steps=200", "stage.init_steps=300", "stage.export_resolution=128", "stage.turntable_frames=8",
        "trainer.val_every_n_steps=100",
        "trainer.enable_progress_bar=false", "logger=csv",
    ))  # fmt: skip
    rig = Rig.load(tmp_path / "avatar_rig.npz")
    colors = trimesh.load(tmp_path / "avatar.ply", process=False).visual.vertex_colors[:, :3] / 255.0
    regions = vertex_regions(torch.as_tensor(rig.weights)).numpy()
    r, g, b = colors.T
    red = (r > g + 0.25) & (r > b + 0.25)
    blue = (b > r + 0.25) & (b > g + 0.1)
    torso, legs = regions == REGIONS.index("torso"), regions == REGIONS.index("legs")
    summary = {k: [round(x, 2) for x in v] for k, v in result["region_rgb"].items()}
    assert red[torso].mean() > 0.6, summary
    assert blue[legs].mean() > 0.6, summary
