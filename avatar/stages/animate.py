"""Animate: the rigged avatar performs the motion, and both are exported (``stage=animate``).

AvatarCLIP generated an avatar and a motion but never put one on the other; here the motion
(canonical skeleton) drives the avatar's rig (``avatar_rig.npz`` from the appearance stage:
the avatar mesh bound to the canonical skeleton with weights transferred from the body model)
by linear blend skinning, and everything is written in formats other tools open:

* ``avatar_animated.glb``: skinned mesh + skeleton + animation (Blender, three.js, any glTF viewer);
* ``motion.bvh``: the motion on the avatar's own skeleton (bone lengths of its rig);
* ``motion_smpl.npz``: SMPL/AMASS-style parameters (``poses`` (T, 72), ``trans``, ``mocap_framerate``);
* ``animation.mp4`` (a camera that follows the body) and ``turntable.mp4`` (the camera orbits
  once while the motion plays), ``animation.png`` (a strip of frames).

The motion is any canonical motion: a motion stage's run directory or ``motion.npz``, a BVH
file, or an AMASS ``.npz``, so captured clips animate the avatar too. A clip decoded in place
(the motion VAE has no translation) gets root travel and height from its foot contacts
(``avatar.mocap.contact``: a generated walk walks); the clip is then shifted vertically (one
offset for the whole clip) so the avatar's lowest point touches the floor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
import trimesh

from avatar.body.base import build_body
from avatar.body.regions import region_colors
from avatar.body.skinning import Rig, rig_from_body
from avatar.export.animation import render_vertices_video
from avatar.export.gltf import write_animated_gltf
from avatar.export.media import image_grid, save_image, save_video
from avatar.mocap.amass import read_amass_npz, write_amass_npz
from avatar.mocap.bvh import read_bvh, write_bvh
from avatar.mocap.contact import travel_from_foot_contacts
from avatar.mocap.retarget import CanonicalMotion, retarget
from avatar.render import sized_renderer
from avatar.stages.base import STAGES, StageModule
from avatar.stages.motion_files import MOTION_FILE, load_motion
from avatar.utils.bounds import at_least

log = logging.getLogger(__name__)

AVATAR_RIG = "avatar_rig.npz"
AVATAR_MESH = "avatar.ply"


class Travel(StrEnum):
    auto = "auto"
    feet = "feet"
    keep = "keep"


@dataclass
class AnimateStageConfig:
    name: str = "animate"
    # The appearance stage's run directory (avatar_rig.npz + avatar.ply); empty: the body model's
    # own mesh in the default shape, painted by body region.
    avatar_dir: str = ""
    # The motion: a motion stage's run directory or motion.npz, a .bvh file, or an AMASS .npz.
    motion: str = ""
    fps: float = at_least(0.0, 0.0)  # playback / export rate; 0 = the motion's own
    ground: bool = True  # shift the clip so the avatar's lowest point over the clip is at z = 0
    # Root travel: "feet" moves the pelvis so the stance foot stays planted (a generated walk,
    # decoded in place, then travels); "keep" uses the motion's own translation; "auto" is
    # "feet" for clips whose pelvis never moves horizontally (the motion stage's) and "keep" otherwise.
    travel: Travel = Travel.auto
    video_size: int = at_least(16, 256)
    camera_distance: float = 3.2
    camera_elevation_deg: float = 10.0
    camera_azimuth_deg: float = 30.0  # animation.mp4's view (0 = the avatar's front)
    strip_frames: int = 6  # frames in animation.png


def read_any_motion(path: str | Path, key: str = "stage.motion") -> CanonicalMotion:
    """A canonical motion from a motion-stage output, a BVH file or an AMASS/SMPL ``.npz``."""
    if not str(path):
        raise ValueError(
            f"`{key}` is empty: give a motion stage's run directory (python train.py stage=motion ...), "
            "its motion.npz, a .bvh file or an AMASS .npz"
        )
    p = Path(path).expanduser()
    if p.is_dir() or p.name == MOTION_FILE:
        return load_motion(p, key)[0]
    if not p.is_file():
        raise FileNotFoundError(f"`{key}`={str(p)!r} does not exist")
    if p.suffix.lower() == ".bvh":
        return retarget(read_bvh(p), fps=None)  # the clip at its own rate
    if p.suffix.lower() == ".npz":
        from avatar.utils.files import load_npz

        keys = set(load_npz(p, key, "a motion clip (a motion stage's motion.npz or an AMASS/SMPL .npz)"))
        if "rotations" in keys:
            return load_motion(p, key)[0]
        return read_amass_npz(p, fps=None, key=key)
    raise ValueError(f"`{key}`={str(p)!r}: unknown motion format (expected a run directory, .npz or .bvh)")


@STAGES.register("animate")
class AnimateStage(StageModule):
    """A one-shot stage: load the rig and the motion, skin, export, render."""

    trainable = False

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.motion = read_any_motion(self.stage_cfg.motion)
        if self.motion.num_frames == 0:
            raise ValueError(f"stage.motion={self.stage_cfg.motion!r} has no frames")
        if self.stage_cfg.fps > 0:
            self.motion = CanonicalMotion(
                self.motion.rotations, self.motion.transl, float(self.stage_cfg.fps), self.motion.source
            )
        self.rig, self.colors, self.avatar_source = self.load_avatar()

    def load_avatar(self) -> tuple[Rig, torch.Tensor, str]:
        """(rig, vertex colours (V, 3) in [0, 1], where they came from)."""
        folder = self.stage_cfg.avatar_dir
        if not folder:
            body = build_body(self.cfg.body)
            rig = rig_from_body(body)
            return rig.to(torch.float32), region_colors(rig.weights.float()), f"{body.name} body, default shape"
        folder = Path(folder).expanduser()
        rig_file, mesh_file = folder / AVATAR_RIG, folder / AVATAR_MESH
        if not rig_file.is_file():
            raise FileNotFoundError(
                f"stage.avatar_dir={str(folder)!r} has no {AVATAR_RIG}: give an appearance stage's run "
                "directory (python train.py stage=appearance ...), or leave stage.avatar_dir empty to "
                "animate the body model itself"
            )
        rig = Rig.load(rig_file).to(torch.float32)
        colors = torch.full((rig.num_vertices, 3), 0.7)
        if mesh_file.is_file():
            mesh = trimesh.load(mesh_file, process=False)
            rgb = np.asarray(mesh.visual.vertex_colors)[:, :3]
            if len(rgb) == rig.num_vertices:
                colors = torch.from_numpy(rgb.astype(np.float32) / 255.0)
            else:
                log.warning("%s has %d vertices, the rig %d: grey avatar", mesh_file, len(rgb), rig.num_vertices)
        return rig, colors, str(folder)

    @torch.no_grad()
    def skinned(self, motion: CanonicalMotion, chunk: int = 32) -> torch.Tensor:
        """(T, V, 3) avatar vertices in every frame."""
        poses = motion.poses()
        return torch.cat([self.rig.pose(poses[i : i + chunk]) for i in range(0, motion.num_frames, chunk)])

    def travelled(self) -> CanonicalMotion:
        """The motion with the root travel of ``stage.travel`` (on the avatar's own skeleton)."""
        motion, mode = self.motion, self.stage_cfg.travel
        in_place = bool((motion.transl[:, :2] - motion.transl[:1, :2]).abs().max() < 1e-6)
        self.travel_used = "feet" if mode == "feet" or (mode == "auto" and in_place) else "keep"
        if self.travel_used == "feet":
            transl = travel_from_foot_contacts(motion.rotations, motion.transl, self.rig.rest_joints)
            return CanonicalMotion(motion.rotations, transl, motion.fps, motion.source)
        return motion

    def grounded(self) -> tuple[CanonicalMotion, torch.Tensor]:
        """The motion (with its root travel) shifted so the avatar stands on z = 0, and its
        skinned vertices. A clip with its own translation is shifted once (its lowest point over
        the clip on the floor, so jumps stay jumps); an in-place clip (``travel_used`` "feet") has
        no height of its own, and each frame stands on its lowest point: the foot-joint height of
        ``travel_from_foot_contacts`` let pointed toes (a ballet relevé) reach below the floor,
        and one shift for the clip then floated the flat-footed frames by centimetres."""
        motion = self.travelled()
        vertices = self.skinned(motion)
        if self.stage_cfg.ground:
            lowest = vertices[..., 2].amin(-1)  # (T,)
            lift = -lowest if self.travel_used == "feet" else -lowest.min().expand_as(lowest)
            transl = motion.transl.clone()
            transl[:, 2] += lift
            motion = CanonicalMotion(motion.rotations, transl, motion.fps, motion.source)
            vertices = vertices + lift[:, None, None] * vertices.new_tensor([0.0, 0.0, 1.0])
        return motion, vertices

    @torch.no_grad()
    def render_videos(self, vertices: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Frames of the followed view and of the turntable (one orbit over the clip)."""
        sc = self.stage_cfg
        renderer = sized_renderer(sc.video_size, background="white")
        view = dict(distance=sc.camera_distance, elevation_deg=sc.camera_elevation_deg, fov_deg=45.0)
        follow = render_vertices_video(vertices, self.rig.faces, self.colors, renderer, sc.camera_azimuth_deg, **view)
        orbit = render_vertices_video(vertices, self.rig.faces, self.colors, renderer, 0.0, orbit=True, **view)
        return follow, orbit

    def export(self) -> dict:
        sc, run_dir = self.stage_cfg, Path(self.cfg.run_dir)
        motion, vertices = self.grounded()
        fps = float(motion.fps)
        files = {
            "gltf": write_animated_gltf(run_dir / "avatar_animated.glb", self.rig, motion, self.colors),
            "bvh": write_bvh(run_dir / "motion.bvh", motion, self.rig.rest_joints),
            "smpl_npz": write_amass_npz(run_dir / "motion_smpl.npz", motion),
        }
        follow, orbit = self.render_videos(vertices)
        files["animation_mp4"] = save_video(run_dir / "animation.mp4", follow, fps=int(round(fps)))
        files["turntable_mp4"] = save_video(run_dir / "turntable.mp4", orbit, fps=int(round(fps)))
        picks = np.linspace(0, len(follow) - 1, min(int(sc.strip_frames), len(follow))).round().astype(int)
        strip = image_grid([follow[i] for i in picks], ncols=len(picks))
        files["strip_png"] = save_image(run_dir / "animation.png", strip)
        from avatar.engine.trainer import log_image

        log_image(self.loggers, "animate/frames", strip, step=0, wandb_images=self.cfg.logger.wandb.log_images)
        travel = (vertices.mean(1)[-1] - vertices.mean(1)[0])[:2].norm()
        result = {
            "avatar": self.avatar_source,
            "motion": str(sc.motion),
            "frames": int(motion.num_frames),
            "fps": fps,
            "seconds": round(motion.num_frames / fps, 3),
            "vertices": int(self.rig.num_vertices),
            "horizontal_travel_m": round(float(travel), 4),
            "travel": self.travel_used,
            "files": {k: str(v) for k, v in files.items()},
            "objective": 0.0,  # nothing is optimised here
        }
        log.info("Animated %s with %d frames at %.1f fps -> %s", self.avatar_source, motion.num_frames, fps, run_dir)
        return result
