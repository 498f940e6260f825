"""The animate stage (the avatar performs a motion; exports) and the one-command pipeline
(``pipeline=full``: shape -> appearance -> pose -> motion -> animate, with reuse and redo)."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from hydra import initialize_config_dir

from avatar.body.skeleton import named_pose
from avatar.body.skinning import Rig
from avatar.config import register_configs
from avatar.engine.runner import run
from avatar.export.gltf import Z_UP_TO_Y_UP, gltf_skinned_vertices, read_animated_gltf
from avatar.mocap.amass import read_amass_npz
from avatar.mocap.bvh import write_bvh
from avatar.mocap.retarget import CanonicalMotion
from avatar.priors.codebook import load_pose_codebook
from avatar.stages.animate import AnimateStage
from avatar.stages.motion_files import save_motion

from helpers import LOW_POLY, ROOT, compose_cfg

ANIMATE = [
    "stage=animate", f"body.topology={LOW_POLY}", "stage.video_size=48", "logger=none",
]  # fmt: skip


def arms_up_and_down(frames: int = 12) -> CanonicalMotion:
    """T-pose -> arms raised and back, drifting forward 0.5 m (so travel shows)."""
    up = named_pose("arms_raised").rotations[0]
    w = torch.sin(torch.linspace(0, torch.pi, frames))[:, None, None]
    rotations = w * up + (1 - w) * named_pose("t_pose").rotations[0]
    rotations[:, 0] = up[0]  # the upright root throughout
    transl = torch.zeros(frames, 3)
    transl[:, 1] = -torch.linspace(0, 0.5, frames)
    return CanonicalMotion(rotations, transl, fps=20.0)


def test_animate_exports_what_it_renders(tmp_path):
    motion = arms_up_and_down()
    save_motion(tmp_path / "motion" / "motion.npz", motion, prompt="arms", generator="test")
    run_dir = tmp_path / "run"
    result = run(compose_cfg(run_dir, *ANIMATE, f"stage.motion={tmp_path / 'motion'}"))
    assert result["frames"] == 12 and result["fps"] == 20.0
    assert result["horizontal_travel_m"] == pytest.approx(0.5, abs=0.02)

    stage = AnimateStage(compose_cfg(tmp_path / "x", *ANIMATE, f"stage.motion={tmp_path / 'motion'}"))
    grounded, vertices = stage.grounded()
    assert float(vertices[..., 2].min()) == pytest.approx(0.0, abs=1e-5)  # on the floor, not under it
    # A clip with its own translation is shifted once for the whole clip (a jump stays a jump).
    assert stage.travel_used == "keep"
    assert torch.allclose(grounded.transl[:, 2] - motion.transl[:, 2], grounded.transl[:1, 2] - motion.transl[:1, 2])
    # The glTF plays the same skinned avatar (Y-up), frame for frame.
    data = read_animated_gltf(run_dir / "avatar_animated.glb")
    assert len(data["times"]) == 12 and data["fps"] == pytest.approx(20.0)
    for t in (0, 6, 11):
        zup = gltf_skinned_vertices(data, t) @ Z_UP_TO_Y_UP  # Y-up rows -> Z-up rows
        assert np.abs(zup - vertices[t].numpy()).max() < 2e-3, t
    # The SMPL-style npz holds the same (grounded) motion.
    smpl = read_amass_npz(run_dir / "motion_smpl.npz", fps=None)
    assert torch.allclose(smpl.rotations, grounded.rotations, atol=1e-5)
    assert torch.allclose(smpl.transl, grounded.transl, atol=1e-4)
    # The videos have a frame per motion frame and show a coloured avatar (not a blank frame).
    frames = imageio.mimread(run_dir / "animation.mp4")
    assert len(frames) == 12
    assert np.asarray(frames[6]).std() > 10
    assert len(imageio.mimread(run_dir / "turntable.mp4")) == 12
    assert "MOTION" in (run_dir / "motion.bvh").read_text()


def test_animate_reads_a_bvh_and_an_appearance_rig(tmp_path, anny_low):
    from avatar.body.skinning import rig_from_body
    from avatar.export.media import save_mesh

    # An "appearance run": a rig file and a coloured mesh, as the appearance stage writes them.
    rig = rig_from_body(anny_low)
    avatar_dir = tmp_path / "avatar"
    rig.save(avatar_dir / "avatar_rig.npz")
    colors = torch.zeros(rig.num_vertices, 3)
    colors[:, 1] = 1.0  # all green
    save_mesh(avatar_dir / "avatar.ply", rig.vertices, rig.faces, colors)
    bvh = write_bvh(tmp_path / "clip.bvh", arms_up_and_down())
    cfg = compose_cfg(tmp_path / "run", *ANIMATE, f"stage.avatar_dir={avatar_dir}", f"stage.motion={bvh}")
    stage = AnimateStage(cfg)
    assert stage.motion.num_frames == 12
    assert torch.allclose(stage.colors[:, 1], torch.ones(rig.num_vertices))
    result = stage.export()
    frame = np.asarray(imageio.mimread(tmp_path / "run" / "animation.mp4")[3]).astype(float)
    body = np.abs(frame - 255).sum(-1) > 60  # not the white background
    mean = frame[body].mean(0)
    assert mean[1] > mean[0] + 30 and mean[1] > mean[2] + 30, mean  # the avatar's own (green) colours
    assert result["vertices"] == rig.num_vertices


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["stage.motion="], "stage.motion"),
        (["stage.motion=/nonexistent/clip.bvh"], "stage.motion"),
        (["stage.motion={motion}", "stage.avatar_dir={tmp}"], "stage.avatar_dir"),
    ],
)
def test_animate_bad_inputs_name_the_key(tmp_path, overrides, key):
    save_motion(tmp_path / "motion.npz", arms_up_and_down(), prompt="", generator="")
    overrides = [o.format(motion=tmp_path / "motion.npz", tmp=tmp_path) for o in overrides]
    with pytest.raises((ValueError, FileNotFoundError), match=key.replace(".", r"\.")):
        AnimateStage(compose_cfg(tmp_path / "run", *ANIMATE, *overrides))


# ---- the pipeline -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_codebook(tmp_path_factory):
    full = load_pose_codebook()
    index = list(range(0, len(full), 64))  # 32 poses spread over the codebook
    from avatar.priors.codebook import PoseCodebook

    small = PoseCodebook(
        full.rotations[index], full.joints[index], full.cluster_sizes[index],
        [full.sources[i] for i in index], {"subset_of": "shipped", "size": len(index)},
    )  # fmt: skip
    return small.save(tmp_path_factory.mktemp("codebook") / "small.npz")


def pipeline_overrides(tmp_path, codebook) -> list[str]:
    return [
        "pipeline=full", f"body.topology={LOW_POLY}", "render.height=64", "render.width=64", "logger=none",
        "trainer.enable_progress_bar=false", f"prior.codebook={codebook}",
        "pipeline.overrides.shape=['stage.codebook_size=8','stage.preview_size=48',"
        f"'stage.cache_dir={tmp_path / 'shape_cache'}']",
        "pipeline.overrides.appearance=['stage.init_steps=40','stage.init_cache=false','stage.volume.compile=false','stage.max_ray_num=300',"
        "'stage.proposal_resolution=32','stage.export_resolution=48','stage.export_views=2','stage.val_size=16',"
        "'stage.val_views=1','stage.turntable_frames=2','trainer.max_steps=2']",
        f"pipeline.overrides.pose=['stage.cache_dir={tmp_path / 'pose_cache'}','stage.preview_size=48']",
        "pipeline.overrides.motion=['trainer.max_steps=2','stage.num_frames=12','stage.guidance_gap=6',"
        "'stage.preview_size=48']",
        "pipeline.overrides.animate=['stage.video_size=32']",
    ]  # fmt: skip


def run_pipeline_in_process(run_dir, overrides):
    """What `python train.py <overrides>` does, in this process (the pipeline composes each
    stage through Hydra's compose API, which needs an initialised Hydra)."""
    from hydra import compose

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"run_dir={run_dir}"])
        return run(cfg, overrides=overrides)


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_reuses_or_redoes_them(tmp_path, small_codebook):
    run_dir = tmp_path / "pipe"
    overrides = pipeline_overrides(tmp_path, small_codebook)
    summary = run_pipeline_in_process(run_dir, overrides)
    names = ["shape", "appearance", "pose", "motion", "animate"]
    assert list(summary["stages"]) == names
    assert not any(s["reused"] for s in summary["stages"].values())
    folders = {n: run_dir / f"{i + 1}_{n}" for i, n in enumerate(names)}
    # Each stage read the one before: the appearance used the shape run's body, the motion the
    # pose run's candidates, the animation the avatar's rig and the motion.
    appearance_cfg = json.loads(
        json.dumps(__import__("yaml").safe_load((folders["appearance"] / "config_resolved.yaml").read_text()))
    )
    assert appearance_cfg["stage"]["shape_dir"] == str(folders["shape"])
    animate = summary["stages"]["animate"]
    assert animate["avatar"] == str(folders["appearance"]) and animate["frames"] == 12
    rig = Rig.load(folders["appearance"] / "avatar_rig.npz")
    data = read_animated_gltf(folders["animate"] / "avatar_animated.glb")
    assert len(data["vertices"]) == rig.num_vertices and len(data["times"]) == 12
    assert json.loads((run_dir / "pipeline.json").read_text())["stages"]["motion"]["folder"] == str(folders["motion"])

    # The same command again reuses every stage (nothing is recomputed).
    mtime = (folders["animate"] / "avatar_animated.glb").stat().st_mtime_ns
    again = run_pipeline_in_process(run_dir, overrides)
    assert all(s["reused"] for s in again["stages"].values())
    assert (folders["animate"] / "avatar_animated.glb").stat().st_mtime_ns == mtime

    # A copied pipeline directory is still the same pipeline: reused, not recomputed.
    import shutil

    copy = tmp_path / "pipe_copy"
    shutil.copytree(run_dir, copy)
    assert all(s["reused"] for s in run_pipeline_in_process(copy, overrides)["stages"].values())

    # A new motion prompt: the avatar is still valid, the pose run is not. Without
    # redo_changed it is an error naming what changed; with it, pose, motion and animate run
    # again and the old folders are kept.
    new_prompt = [*overrides, "prompt.motion=a person squatting"]
    with pytest.raises(RuntimeError, match="prompt.motion"):
        run_pipeline_in_process(run_dir, new_prompt)
    redone = run_pipeline_in_process(run_dir, [*new_prompt, "pipeline.redo_changed=true"])
    assert [n for n, s in redone["stages"].items() if s["reused"]] == ["shape", "appearance"]
    assert redone["stages"]["pose"]["prompt"] == "a person squatting"
    kept = sorted(p.name.split(".")[0] for p in run_dir.glob("*.replaced-*"))
    assert kept == ["3_pose", "4_motion", "5_animate"]


def test_pipeline_rejects_unknown_stages(tmp_path):
    with pytest.raises(ValueError, match="pipeline.stages"):
        run_pipeline_in_process(tmp_path, ["pipeline=full", "pipeline.stages=[shape,texture]"])


def captured_walk(tmp_path) -> CanonicalMotion:
    """CMU subject 7, trial 1 (a straight walk) from the shared corpus beside the repository."""
    import tarfile
    from pathlib import Path

    from avatar.mocap.bvh import read_bvh
    from avatar.mocap.retarget import retarget

    archive = Path(__file__).resolve().parents[2] / "shared" / "mocap" / "cgspeed_daz.tar.xz"
    if not archive.is_file():
        pytest.skip(f"no mocap corpus at {archive.parent}")
    with tarfile.open(archive, "r:xz") as tar:
        member = next(m for m in tar if m.name.endswith("Przestr__motion-capture/07_01.bvh"))
        (tmp_path / "walk.bvh").write_bytes(tar.extractfile(member).read())
    return retarget(read_bvh(tmp_path / "walk.bvh"))


@pytest.mark.slow
def test_an_in_place_walk_travels_with_planted_feet(tmp_path):
    """A captured walk with its translation removed (as the motion VAE decodes clips) gets its
    travel back from the foot contacts: most of the captured distance, and far less foot
    skating than in place."""
    from avatar.body.skeleton import CanonicalPose, forward_kinematics
    from avatar.metrics.motion import foot_skating
    from avatar.mocap.contact import travel_from_foot_contacts

    walk = captured_walk(tmp_path)
    in_place = walk.transl.clone()
    in_place[:, :2] = in_place[:1, :2]
    travel = travel_from_foot_contacts(walk.rotations, in_place)

    def skate(transl):
        return foot_skating(forward_kinematics(CanonicalPose(walk.rotations, transl)), walk.fps)["skate_speed"]

    true_distance = float((walk.transl[-1, :2] - walk.transl[0, :2]).norm())
    distance = float((travel[-1, :2] - travel[0, :2]).norm())
    assert 0.6 * true_distance < distance < 1.4 * true_distance
    assert skate(travel) < 0.5 * skate(in_place)
    # The lower foot stays at one height (a squat in place does not rise off the floor), and a
    # second pass changes nothing.
    from avatar.mocap.contact import FEET

    joints = forward_kinematics(CanonicalPose(walk.rotations, travel))
    lowest = torch.stack([joints[:, list(f), 2] for f in FEET], 1).amin((1, 2))
    assert float(lowest.max() - lowest.min()) < 1e-4
    assert torch.allclose(travel_from_foot_contacts(walk.rotations, travel), travel, atol=1e-5)
    # The animate stage applies it to in-place clips only (stage.travel=auto).
    save_motion(tmp_path / "motion.npz", CanonicalMotion(walk.rotations, in_place, walk.fps))
    stage = AnimateStage(compose_cfg(tmp_path / "run", *ANIMATE, f"stage.motion={tmp_path / 'motion.npz'}"))
    assert stage.travelled() is not stage.motion and stage.travel_used == "feet"
    # ...and stands each frame of an in-place clip on the avatar's lowest point (the foot joints'
    # height alone leaves pointed toes under the floor and flat feet above it).
    _, vertices = stage.grounded()
    assert vertices[..., 2].amin(-1).abs().max() < 1e-5
