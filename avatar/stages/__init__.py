"""One module per pipeline stage; each registers itself in ``STAGES`` under its config name."""

from avatar.stages.base import STAGES, StageModule


def build_stage(cfg):
    """Build the stage named by ``cfg.stage.name``."""
    from avatar.guidance import training as _guidance  # noqa: F401  (registration)
    from avatar.priors import training  # noqa: F401
    from avatar.stages import animate, appearance, motion, pose, pose_fit, shape, showcase  # noqa: F401

    return STAGES.build(cfg.stage.name, cfg)


__all__ = ["STAGES", "StageModule", "build_stage"]
