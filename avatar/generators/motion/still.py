"""``still``: the best candidate pose held for every frame. The baseline every motion metric
should beat: no jerk, no travel, no motion at all."""

from __future__ import annotations

import torch

from avatar.generators.motion import MOTION_GENERATORS, OneShot


@MOTION_GENERATORS.register("still")
class Still(OneShot):
    def make(self, stage) -> torch.Tensor:
        best = stage.candidate_rotations[:1].expand(int(stage.stage_cfg.num_frames), -1, -1)
        return stage.with_root(best.clone())
