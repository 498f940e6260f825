"""Showcase: the body model posed by canonical poses and rendered from the paper's views.

The foundation's demo job: it exercises the body model, the canonical skeleton, the renderer,
the paper's view sampling and backgrounds, and the exporters, and writes
``showcase_grid.png`` (poses x views), ``turntable.mp4`` (the body moving through the poses while
the camera circles it) and one coloured ``.ply`` per pose into the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import roma
import torch
from tqdm import tqdm

from avatar.body.base import build_body
from avatar.body.regions import region_colors
from avatar.body.skeleton import JOINT_INDEX, CanonicalPose, named_pose
from avatar.engine.trainer import log_image
from avatar.export.media import image_grid, save_image, save_mesh, save_video, to_uint8
from avatar.render import MeshRenderer, make_background, orbit_cameras, sample_views
from avatar.stages.base import STAGES, StageModule
from avatar.utils.bounds import above, at_least


@dataclass
class ShowcaseStageConfig:
    name: str = "showcase"
    poses: list[str] = field(
        default_factory=lambda: ["a_pose", "t_pose", "arms_raised", "squat", "walk_stride", "kick"]
    )
    fixed_azimuths: list[float] = field(default_factory=lambda: [0.0, 45.0, 90.0, 180.0])
    random_views: int = 2  # extra columns drawn with the paper's view sampling (and backgrounds)
    full_body_distance: float = 1.9  # metres, for the fixed turntable views
    turntable_frames: int = at_least(1, 96)
    fps: int = above(0, 24)
    export_meshes: bool = True


@STAGES.register("showcase")
class ShowcaseStage(StageModule):
    trainable = False

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.body = build_body(cfg.body)
        self.renderer = MeshRenderer(cfg.render)
        self.colors = region_colors(self.body.skinning_weights)

    @torch.no_grad()
    def export(self) -> dict:
        sc, run_dir = self.stage_cfg, Path(self.cfg.run_dir)
        generator = torch.Generator().manual_seed(int(self.cfg.seed))
        poses = CanonicalPose.cat([named_pose(p, dtype=self.body.dtype) for p in sc.poses])
        out = self.body(pose=poses)
        ground = out.vertices[0, :, 2].min()  # keep every pose standing on the first one's floor
        lift = ground - out.vertices[..., 2].amin(1)
        out.vertices[..., 2] += lift[:, None]
        out.joints[..., 2] += lift[:, None]
        faces = self.body.faces
        tiles = []
        for i, name in enumerate(tqdm(sc.poses, desc="showcase poses")):
            verts = out.vertices[i]
            centre = 0.5 * (verts.amax(0) + verts.amin(0))
            fixed = orbit_cameras(1, sc.full_body_distance, 10.0, centre, 60.0)
            row = []
            for azimuth in sc.fixed_azimuths:
                cams = orbit_cameras(1, sc.full_body_distance, 10.0, centre, 60.0, start_azimuth_deg=azimuth)
                row.append(self.renderer.render(verts, faces, cams, colors=self.colors).rgb[0])
            if sc.random_views:
                head = out.joints[i, JOINT_INDEX["head"]]
                cams, info = sample_views(sc.random_views, self.cfg.views, generator, centre, head, step=i)
                bg = make_background(
                    "random", sc.random_views, self.cfg.render.height, self.cfg.render.width, generator, verts.device
                )
                rgb = self.renderer.render(
                    verts,
                    faces,
                    cams,
                    colors=self.colors,
                    background=bg,
                    light_dir=info["light_dir"],
                    ambient=info["ambient"],
                ).rgb
                row += list(rgb)
            # The textureless grey render the paper also guides with.
            row.append(self.renderer.render(verts, faces, fixed).rgb[0])
            tiles += [to_uint8(t) for t in row]
            if sc.export_meshes:
                save_mesh(run_dir / "meshes" / f"{name}.ply", verts, faces, self.colors)
        ncols = len(tiles) // len(sc.poses)
        grid = image_grid(tiles, ncols)
        save_image(run_dir / "showcase_grid.png", grid)
        frames = self.turntable(poses, out.vertices)
        save_video(run_dir / "turntable.mp4", frames, fps=sc.fps)
        log_image(self.loggers, "showcase/grid", grid, step=0, wandb_images=self.cfg.logger.wandb.log_images)
        result = {"poses": list(sc.poses), "grid_shape": list(grid.shape), "frames": len(frames)}
        return result

    def turntable(self, poses: CanonicalPose, key_vertices: torch.Tensor) -> list[np.ndarray]:
        """The body blends from pose to pose (slerp of every joint rotation) while the camera
        makes one full turn around the box that holds every key pose."""
        sc = self.stage_cfg
        n = sc.turntable_frames
        keys = poses.batch_size
        points = key_vertices.reshape(-1, 3)
        centre = 0.5 * (points.amax(0) + points.amin(0))
        cams = orbit_cameras(n, sc.full_body_distance + 0.6, 10.0, centre, 60.0)
        frames = []
        for f in tqdm(range(n), desc="turntable"):
            t = f / n * keys
            a, b = int(t) % keys, (int(t) + 1) % keys
            w = torch.tensor(t - int(t), dtype=self.body.dtype)
            w = 0.5 - 0.5 * torch.cos(torch.pi * w)  # ease in/out
            rot = roma.rotvec_slerp(poses.rotations[a], poses.rotations[b], w[None])[0]
            pose = CanonicalPose(rot[None], torch.zeros(1, 3, dtype=self.body.dtype))
            verts = self.body(pose=pose).vertices[0]
            verts[:, 2] += points[:, 2].min() - verts[:, 2].min()  # feet on the floor
            frames.append(
                to_uint8(self.renderer.render(verts, self.body.faces, cams[f : f + 1], colors=self.colors).rgb[0])
            )
        return frames
