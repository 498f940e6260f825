"""``stage.generator=latent``: AvatarCLIP's optimisation of the pose prior's latent code (VPoser
architecture; Adam 0.01, 500 steps in the paper). ``num_candidates`` codes from seeded
N(0, ``init_latent_std``^2) starts are decoded to body rotations and optimised by the stage's
guidance loss on renders, with a small latent-norm term keeping them likely (``lambda_latent``).
The prior (``prior.*``) is a fixed input: frozen, rebuilt from the config, not checkpointed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from avatar.generators.pose import POSE_GENERATORS, PoseGenerator, with_upright_root

if TYPE_CHECKING:
    from avatar.stages.pose import PoseStage


@POSE_GENERATORS.register("latent")
class LatentGenerator(PoseGenerator):
    trainable = True
    fixed = ("prior",)

    def __init__(self, stage: PoseStage) -> None:
        super().__init__(stage)
        from avatar.priors.loading import load_pose_prior

        self.prior = load_pose_prior(stage.cfg.prior)
        g = torch.Generator().manual_seed(int(stage.cfg.seed))
        init = torch.randn(int(stage.stage_cfg.num_candidates), self.prior.latent_dim, generator=g)
        self.latent = torch.nn.Parameter(init * float(stage.stage_cfg.init_latent_std))

    def rotations(self, stage: PoseStage) -> torch.Tensor:
        return with_upright_root(self.prior.decode(self.latent)["pose_body"].to(stage.body.dtype))

    def losses(self, stage: PoseStage) -> dict[str, torch.Tensor]:
        if not stage.active("latent"):
            return {}
        return {"latent": (self.latent**2).mean()}  # the prior's -log N(0, I) up to a constant

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return [self.latent]
