"""Learned pose and motion priors, with the architectures of the paper's originals."""

from avatar.priors.motion_vae import (
    MOTION_VAE_CONFIG_KEY,
    MotionVAE,
    MotionVAEConfig,
    canonical_to_features,
    features_to_canonical,
    load_avatarclip_motion_vae,
)
from avatar.priors.vposer import (
    VPOSER_CONFIG_KEY,
    PriorWeightsError,
    VPoser,
    VPoserConfig,
    canonical_to_vposer,
    load_vposer_checkpoint,
    vposer_to_canonical,
)

__all__ = [
    "MOTION_VAE_CONFIG_KEY",
    "VPOSER_CONFIG_KEY",
    "MotionVAE",
    "MotionVAEConfig",
    "PriorWeightsError",
    "VPoser",
    "VPoserConfig",
    "canonical_to_features",
    "canonical_to_vposer",
    "features_to_canonical",
    "load_avatarclip_motion_vae",
    "load_vposer_checkpoint",
    "vposer_to_canonical",
]
