"""``latent``: AvatarCLIP's motion generation (``MotionOptimizer``): the motion VAE's latent code
``z`` (1, D), started by ``stage.latent_init`` (latent_init.py), is optimised with Adam on the
stage's loss (reconstruction + guidance - delta [+ smoothness] [+ latent], see
avatar/stages/motion.py) and decoded into ``num_frames`` frames."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from avatar.generators.motion import LATENT_INITS, MOTION_GENERATORS, MotionGenerator

if TYPE_CHECKING:
    from avatar.stages.motion import MotionStage


@MOTION_GENERATORS.register("latent")
class LatentGenerator(MotionGenerator):
    trainable = True
    terms = ("reconstruction", "guidance", "delta", "smoothness", "latent")

    def __init__(self, stage: MotionStage) -> None:
        super().__init__(stage)
        rng = torch.Generator().manual_seed(int(stage.cfg.seed))
        init, self._info = LATENT_INITS.build(stage.stage_cfg.latent_init, stage, rng)
        self.latent = torch.nn.Parameter(init)

    @torch.no_grad()
    def motion_rotations(self, stage: MotionStage) -> torch.Tensor:
        return stage.decode(self.latent)[0].detach()

    def losses(self, stage: MotionStage) -> dict[str, torch.Tensor]:
        rotations, body_rotmats = stage.decode(self.latent)
        losses = stage.motion_losses(rotations, body_rotmats)
        if stage.active("latent"):
            losses["latent"] = (self.latent**2).mean()
        if not losses:  # every weight is 0 at this step (a schedule): a zero loss, no update
            losses["latent"] = (self.latent * 0.0).sum()
        return losses

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return [self.latent]

    def info(self) -> dict[str, Any]:
        return dict(self._info)
