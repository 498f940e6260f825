"""Where the latent generators' optimisation of the motion VAE's code starts (``stage.latent_init``).

Each is a function ``(stage, rng) -> (code (1, D), info)`` registered in :data:`LATENT_INITS`;
``rng`` is seeded by ``seed``, ``info`` goes into result.json.

* ``normal``: N(0, ``latent_init_std``^2) (AvatarCLIP);
* ``zeros``;
* ``interpolation``: the code of the interpolation baseline's clip (encoded by the VAE), a start
  that already passes near every candidate;
* ``search`` (not in the paper): of ``search_samples`` codes drawn as for ``normal``, the one
  whose decoded clip best reconstructs the candidates (a motion-prior codebook: a clip that moves
  through the candidates, e.g. a gait cycle through strides);
* ``prior_search`` (not in the paper): the same search over ``search_samples`` draws of the
  motion VAE's own sampler (``MotionVAE.sample_codes``: for the free model, the training clips'
  posteriors, each recording weighing the same, a third of them walks; N(0, I) for a file
  without them, as ``search`` at ``latent_init_std=1``);
* ``retrieval`` (not in the paper): the code of the real clip the ``retrieval`` generator picks
  with the stage's settings, ``lambda_description`` included (encoded by the VAE, as captured:
  heading-normalised root), so the optimisation starts from real motion that already passes
  near the candidates and does what the prompt names (a walk clip for "walking").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from avatar.generators.motion import LATENT_INITS
from avatar.generators.motion.interpolation import interpolate
from avatar.priors.motion_vae import canonical_to_features, rot6d_to_rotmat

if TYPE_CHECKING:
    from avatar.stages.motion import MotionStage


@LATENT_INITS.register("normal")
def normal(stage: MotionStage, rng: torch.Generator) -> tuple[torch.Tensor, dict]:
    dim = stage.prior.config.latent_dim
    return torch.randn(1, dim, generator=rng) * float(stage.stage_cfg.latent_init_std), {}


@LATENT_INITS.register("zeros")
def zeros(stage: MotionStage, rng: torch.Generator) -> tuple[torch.Tensor, dict]:
    return torch.zeros(1, stage.prior.config.latent_dim), {}


@LATENT_INITS.register("interpolation")
def interpolation(stage: MotionStage, rng: torch.Generator) -> tuple[torch.Tensor, dict]:
    dim = stage.prior.config.latent_dim
    with torch.no_grad():
        clip = canonical_to_features(interpolate(stage)[None], stage.prior.config.num_joints)
        return stage.prior.encode(clip)[0].reshape(1, dim).float(), {}


@LATENT_INITS.register("search")
def search(stage: MotionStage, rng: torch.Generator) -> tuple[torch.Tensor, dict]:
    dim = stage.prior.config.latent_dim
    codes = torch.randn(search_samples(stage), dim, generator=rng) * float(stage.stage_cfg.latent_init_std)
    return search_latent(stage, codes)


@LATENT_INITS.register("prior_search")
def prior_search(stage: MotionStage, rng: torch.Generator) -> tuple[torch.Tensor, dict]:
    return search_latent(stage, stage.prior.sample_codes(search_samples(stage), rng).float())


def search_samples(stage: MotionStage) -> int:
    """``stage.search_samples``, checked."""
    sc = stage.stage_cfg
    if sc.search_samples < 1:
        raise ValueError(
            f"stage.search_samples must be >= 1 with stage.latent_init={sc.latent_init}, got {sc.search_samples}"
        )
    return int(sc.search_samples)


@torch.no_grad()
def search_latent(stage: MotionStage, codes: torch.Tensor, chunk: int = 128) -> tuple[torch.Tensor, dict]:
    """The code (1, D) among ``codes`` (N, D) whose clip has the lowest reconstruction loss."""
    t = int(stage.stage_cfg.num_frames)
    losses = []
    for part in codes.split(chunk):
        features = stage.prior.decode(part, t)
        rotmats = rot6d_to_rotmat(features.reshape(len(part), t, -1, 6)[:, :, 1:22])  # (n, T, 21, 3, 3)
        losses.append(torch.stack([(stage.rank_weights * stage.reconstruction_distances(r)).sum() for r in rotmats]))
    losses = torch.cat(losses)
    best = int(losses.argmin())
    info = {"search_samples": len(codes), "search_best_index": best,
            "search_best_reconstruction": float(losses[best])}  # fmt: skip
    return codes[best : best + 1].clone(), info


@LATENT_INITS.register("retrieval")
def retrieval(stage: MotionStage, rng: torch.Generator) -> tuple[torch.Tensor, dict]:
    from avatar.generators.motion.retrieval import RetrievalGenerator

    picker = RetrievalGenerator(stage)
    picker.make(stage)
    # The clip is encoded at the VAE's own length (a convolutional VAE encodes nothing else) and
    # decoded at stage.num_frames: its first frames are the retrieved clip's.
    vae_frames = int(stage.prior.config.num_frames)
    if len(picker.captured) < vae_frames:
        raise ValueError(
            f"stage.latent_init=retrieval encodes the retrieved clip with the motion VAE, which takes {vae_frames}-frame "
            f"clips; the motion codebook ({stage.cfg.prior.motion_codebook or 'shipped'}) holds {len(picker.captured)}-frame "
            "clips: rebuild it with `python train.py stage=build_motion_codebook stage.num_frames=<n>` or use another "
            "stage.latent_init"
        )
    with torch.no_grad():
        clip = picker.captured[None, :vae_frames]
        code, _ = stage.prior.encode(canonical_to_features(clip, stage.prior.config.num_joints))
    return code.reshape(1, stage.prior.config.latent_dim).float(), picker.info()
