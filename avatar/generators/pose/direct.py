"""``stage.generator=direct``: AvatarCLIP's direct pose optimisation. The body joints' axis-angle
rotations of ``num_candidates`` poses, from seeded starts (``init_noise_deg`` of noise around the
rest pose, one draw per candidate), are optimised by the stage's guidance loss on renders, with
a small L2 term on the rotations (``lambda_rotation_l2``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from avatar.generators.pose import POSE_GENERATORS, PoseGenerator, with_upright_root

if TYPE_CHECKING:
    from avatar.stages.pose import PoseStage


@POSE_GENERATORS.register("direct")
class DirectGenerator(PoseGenerator):
    trainable = True

    def __init__(self, stage: PoseStage) -> None:
        super().__init__(stage)
        sc = stage.stage_cfg
        g = torch.Generator().manual_seed(int(stage.cfg.seed))
        init = torch.randn(int(sc.num_candidates), 21, 3, generator=g) * math.radians(float(sc.init_noise_deg))
        self.body_rotations = torch.nn.Parameter(init.to(stage.body.dtype))  # (K, 21, 3)

    def rotations(self, stage: PoseStage) -> torch.Tensor:
        return with_upright_root(self.body_rotations)

    def losses(self, stage: PoseStage) -> dict[str, torch.Tensor]:
        if not stage.active("rotation_l2"):
            return {}
        return {"rotation_l2": (self.body_rotations**2).sum(-1).mean()}  # mean squared axis-angle (rad^2)

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return [self.body_rotations]
