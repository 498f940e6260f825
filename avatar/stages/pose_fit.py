"""Pose fitting (inverse kinematics): find the canonical pose whose joints on the chosen body
match target 3D joints. Targets are a named pose's joints on a (possibly different) body model,
so it also retargets poses between bodies. It is the smallest real optimisation stage, and the
one the framework's plumbing (losses, schedules, checkpoints, resume, loggers) is tested on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from avatar.body.base import build_body
from avatar.body.regions import region_colors
from avatar.body.skeleton import CanonicalPose, named_pose
from avatar.export.media import image_grid, save_image, to_uint8
from avatar.render import MeshRenderer, orbit_cameras
from avatar.stages.base import STAGES, StageModule
from avatar.utils.io import atomic_path


@dataclass
class PoseFitStageConfig:
    name: str = "pose_fit"
    target_pose: str = "arms_raised"  # a named canonical pose (avatar.body.skeleton.pose_names())
    lr: float = 0.03
    warmup_steps: int = 10
    init_noise_deg: float = 0.0  # random initial rotations (std, degrees) instead of the rest pose
    lambda_joints: Any = 1.0  # mean squared joint position error (m^2)
    # Small-rotation regulariser (mean squared axis-angle, rad^2), faded out as the fit converges.
    lambda_rotation_l2: Any = field(default_factory=lambda: [0, 1e-3, 0.0, 100])
    val_views: int = 3  # turntable views in each validation image


@STAGES.register("pose_fit")
class PoseFitStage(StageModule):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.body = build_body(cfg.body)
        self.freeze_component("body")
        target = named_pose(self.stage_cfg.target_pose, dtype=self.body.dtype)
        with torch.no_grad():
            self.register_buffer("target_joints", self.body(pose=target).joints)
        init = CanonicalPose.rest(1, self.body.dtype)
        generator = torch.Generator().manual_seed(int(cfg.seed))
        noise = torch.randn(init.rotations.shape, generator=generator, dtype=self.body.dtype)
        init.rotations[:, 1:] += noise[:, 1:] * np.deg2rad(self.stage_cfg.init_noise_deg)
        self.rotations = torch.nn.Parameter(init.rotations)
        self.transl = torch.nn.Parameter(init.transl)
        self.renderer = MeshRenderer(cfg.render)
        self.register_buffer("colors", region_colors(self.body.skinning_weights), persistent=False)

    def pose(self) -> CanonicalPose:
        return CanonicalPose(self.rotations, self.transl)

    def joint_error_mm(self) -> float:
        with torch.no_grad():
            joints = self.body(pose=self.pose()).joints
        return float((joints - self.target_joints).norm(dim=-1).mean() * 1000.0)

    def compute_losses(self, batch) -> dict[str, torch.Tensor]:
        losses = {}
        out = self.body(pose=self.pose())
        if self.active("joints"):
            losses["joints"] = ((out.joints - self.target_joints) ** 2).sum(-1).mean()
        if self.active("rotation_l2"):
            losses["rotation_l2"] = (self.rotations[:, 1:] ** 2).sum(-1).mean()
        return losses

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return [self.rotations, self.transl]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.log("metrics/joint_error_mm", self.joint_error_mm(), on_step=True, prog_bar=True)

    def validate(self) -> None:
        self.validation_image()

    def export(self) -> dict[str, str]:
        self.validation_image()
        pose = self.pose()
        with torch.no_grad():
            joints = self.body(pose=pose).joints
        with atomic_path(self.run_dir() / "pose_fit.npz") as tmp:
            np.savez(
                tmp,
                rotations=pose.rotations.detach().cpu().numpy(),
                transl=pose.transl.detach().cpu().numpy(),
                joints=joints.cpu().numpy(),
                target_joints=self.target_joints.cpu().numpy(),
            )
        return {"pose_file": "pose_fit.npz"}

    def validation_image(self) -> np.ndarray:
        """Fitted body (top row) and target (bottom row) from a few turntable views."""
        with torch.no_grad():
            fitted = self.body(pose=self.pose()).vertices[0]
            target = self.body(pose=named_pose(self.stage_cfg.target_pose, dtype=self.body.dtype)).vertices[0]
            centre = 0.5 * (target.amax(0) + target.amin(0))
            cams = orbit_cameras(self.stage_cfg.val_views, 2.6, 10.0, centre, 60.0, start_azimuth_deg=-30.0)
            tiles = []
            for verts in (fitted, target):
                rgb = self.renderer.render(verts, self.body.faces, cams, colors=self.colors).rgb
                tiles += [to_uint8(img) for img in rgb]
        grid = image_grid(tiles, ncols=self.stage_cfg.val_views)
        save_image(self.run_dir() / "images" / f"fit_step{self.global_step:06d}.png", grid)
        self.log_image("val/fit", grid)
        return grid

    def evaluate(self) -> dict[str, float]:
        error = self.joint_error_mm()
        return {"joint_error_mm": error, "objective": error}
