"""The body-model protocol: every body (Anny, SMPL, ...) is posed by the canonical skeleton.

A body model maps (shape parameters, canonical pose) to a posed mesh, differentiably in both,
and exposes what rigging needs: faces, skinning weights on the 22 canonical joints, rest mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avatar.body.skeleton import NUM_JOINTS, CanonicalPose
from avatar.registry import Registry

BODY_MODELS: Registry["BodyModel"] = Registry("body model", "body")


@dataclass
class BodyOutput:
    vertices: torch.Tensor  # (B, V, 3) posed, world (Z-up), pelvis at pose.transl
    joints: torch.Tensor  # (B, 22, 3) canonical joints, posed, world
    rest_vertices: (
        torch.Tensor
    )  # (B, V, 3) the model's native rest pose (Anny: A, SMPL: T), upright, pelvis at the origin
    rest_joints: torch.Tensor  # (B, 22, 3) canonical joints in that rest pose


class BodyModel(nn.Module):
    """Base class. Subclasses set ``faces``/``skinning_weights`` buffers and implement forward."""

    name: str
    shape_names: tuple[str, ...]  # one name per shape parameter (phenotypes, betas)
    faces: torch.Tensor  # (F, 3) int64
    skinning_weights: torch.Tensor  # (V, 22): each vertex's weights on the canonical joints

    @property
    def num_vertices(self) -> int:
        return self.skinning_weights.shape[0]

    @property
    def shape_dim(self) -> int:
        return len(self.shape_names)

    @property
    def dtype(self) -> torch.dtype:
        return self.skinning_weights.dtype

    @property
    def device(self) -> torch.device:
        return self.skinning_weights.device

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        """The neutral shape parameters (B, shape_dim)."""
        raise NotImplementedError

    def forward(self, shape: torch.Tensor | None = None, pose: CanonicalPose | None = None) -> BodyOutput:
        raise NotImplementedError

    def _batch_inputs(
        self, shape: torch.Tensor | None, pose: CanonicalPose | None
    ) -> tuple[torch.Tensor, CanonicalPose]:
        """Broadcast shape and pose to one batch size, on this model's dtype/device."""
        b_shape = 1 if shape is None else (shape.shape[0] if shape.ndim == 2 else 1)
        b_pose = 1 if pose is None else pose.batch_size
        if b_shape != b_pose and 1 not in (b_shape, b_pose):
            raise ValueError(f"shape batch {b_shape} and pose batch {b_pose} do not broadcast")
        batch = max(b_shape, b_pose)
        if shape is None:
            shape = self.default_shape(batch)
        shape = shape.to(self.device, self.dtype).reshape(-1, self.shape_dim).expand(batch, -1)
        if pose is None:
            pose = CanonicalPose.rest(batch, self.dtype, self.device)
        pose = pose.to(self.device, self.dtype)
        if pose.batch_size != batch:
            pose = CanonicalPose(pose.rotations.expand(batch, NUM_JOINTS, 3), pose.transl.expand(batch, 3))
        return shape, pose


def build_body(cfg) -> BodyModel:
    """Build the body model named by ``cfg.name`` (``body=anny|smpl``)."""
    # Import for registration side effects only here, so `import avatar.body` stays light.
    from avatar.body import anny_body, smpl_body  # noqa: F401

    return BODY_MODELS.build(cfg.name, cfg)
