"""``reconstruction``: the paper's first baseline: the latent optimisation with the guidance and
delta terms off (the candidates alone shape the clip)."""

from __future__ import annotations

from avatar.generators.motion import MOTION_GENERATORS
from avatar.generators.motion.latent import LatentGenerator


@MOTION_GENERATORS.register("reconstruction")
class ReconstructionGenerator(LatentGenerator):
    terms = ("reconstruction", "smoothness", "latent")
