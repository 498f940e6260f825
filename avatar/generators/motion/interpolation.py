"""``interpolation``: the paper's second baseline. Each candidate is encoded as a static clip by
the VAE encoder, the codes are placed at evenly spaced key times in rank order and interpolated
linearly, and frame t is frame t of the clip decoded from the code at time t. No optimisation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from avatar.generators.motion import MOTION_GENERATORS, OneShot
from avatar.priors.motion_vae import canonical_to_features, rot6d_to_rotmat

if TYPE_CHECKING:
    from avatar.stages.motion import MotionStage


@torch.no_grad()
def interpolate(stage: MotionStage) -> torch.Tensor:
    """The interpolation baseline's rotations (T, 22, 3) (see the module docstring)."""
    t = int(stage.stage_cfg.num_frames)
    static = stage.candidate_rotations[:, None].expand(-1, t, -1, -1)
    codes, _ = stage.prior.encode(canonical_to_features(static, stage.prior.config.num_joints))  # (K, D)
    k = len(codes)
    if k == 1:
        z = codes.expand(t, -1)
    else:
        key_times = torch.linspace(0, t - 1, k, device=codes.device)
        pos = torch.arange(t, dtype=torch.float32, device=codes.device)
        seg = torch.searchsorted(key_times, pos, right=True).clamp(1, k - 1) - 1
        alpha = ((pos - key_times[seg]) / (key_times[seg + 1] - key_times[seg]))[:, None]
        z = (1 - alpha) * codes[seg] + alpha * codes[seg + 1]
    clips = stage.prior.decode(z, t)  # (T, T, F): one clip per time
    diagonal = torch.arange(t, device=clips.device)
    features = clips[diagonal, diagonal]  # frame t of clip t
    return stage.decoded_rotations(rot6d_to_rotmat(features.reshape(t, -1, 6)[:, :22]))


@MOTION_GENERATORS.register("interpolation")
class InterpolationGenerator(OneShot):
    def make(self, stage: MotionStage) -> torch.Tensor:
        return interpolate(stage)
