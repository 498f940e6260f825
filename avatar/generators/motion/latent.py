"""``latent``: AvatarCLIP's motion generation (``MotionOptimizer``): the motion VAE's latent code
``z`` (1, D), started by ``stage.latent_init`` (latent_init.py), is optimised with Adam on the
stage's loss (reconstruction + guidance - delta [+ smoothness] [+ latent], see
avatar/stages/motion.py) and decoded into ``num_frames`` frames."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from avatar.generators.motion import LATENT_INITS, MOTION_GENERATORS, MotionGenerator
from avatar.priors.data import body_joints

if TYPE_CHECKING:
    from avatar.stages.motion import MotionStage

log = logging.getLogger(__name__)


@MOTION_GENERATORS.register("latent")
class LatentGenerator(MotionGenerator):
    trainable = True
    # "description" is no loss term here: it ranks the clip that ``latent_init=retrieval`` starts from.
    terms = ("reconstruction", "guidance", "delta", "smoothness", "latent", "description")

    def __init__(self, stage: MotionStage) -> None:
        super().__init__(stage)
        if stage.active("description") and stage.stage_cfg.latent_init != "retrieval":
            log.warning(
                "stage.lambda_description ranks the clip stage.latent_init=retrieval starts from: ignored with "
                "stage.latent_init=%s",
                stage.stage_cfg.latent_init,
            )
        rng = torch.Generator().manual_seed(int(stage.cfg.seed))
        init, self._info = LATENT_INITS.build(stage.stage_cfg.latent_init, stage, rng)
        self.latent = torch.nn.Parameter(init)
        # stage.smooth_change: the smoothness term smooths the change from the start clip (its
        # joints, recomputed from the same init on a resume), so a retrieved walk keeps its strides.
        self.start_joints = None
        if stage.stage_cfg.smooth_change:
            with torch.no_grad():
                self.start_joints = body_joints(stage.decode(init)[0])

    @torch.no_grad()
    def motion_rotations(self, stage: MotionStage) -> torch.Tensor:
        return stage.decode(self.latent)[0].detach()

    def losses(self, stage: MotionStage) -> dict[str, torch.Tensor]:
        rotations, body_rotmats = stage.decode(self.latent)
        losses = stage.motion_losses(rotations, body_rotmats, smoothness_reference=self.start_joints)
        if stage.active("latent"):
            losses["latent"] = (self.latent**2).mean()
        if not losses:  # every weight is 0 at this step (a schedule): a zero loss, no update
            losses["latent"] = (self.latent * 0.0).sum()
        return losses

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return [self.latent]

    def info(self) -> dict[str, Any]:
        return dict(self._info)
