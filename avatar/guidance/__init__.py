"""Guidance backends: frozen image-text models that score renders against prompts.

Importing this package registers every backend in ``GUIDANCE``; ``build_guidance(cfg)``
builds the one named by ``cfg.name`` (``clip``, ``open_clip``, ``mini``).
"""

from avatar.guidance.base import (
    GUIDANCE,
    Guidance,
    GuidanceWeightsError,
    build_guidance,
    similarity,
)
from avatar.guidance.clip_backend import ClipGuidance, ClipGuidanceConfig, build_clip_guidance
from avatar.guidance.mini import MiniGuidanceConfig, build_mini_guidance
from avatar.guidance.open_clip_backend import (
    OpenClipGuidance,
    OpenClipGuidanceConfig,
    build_open_clip_guidance,
)

__all__ = [
    "GUIDANCE",
    "ClipGuidance",
    "ClipGuidanceConfig",
    "Guidance",
    "GuidanceWeightsError",
    "MiniGuidanceConfig",
    "OpenClipGuidance",
    "OpenClipGuidanceConfig",
    "build_clip_guidance",
    "build_guidance",
    "build_mini_guidance",
    "build_open_clip_guidance",
    "similarity",
]
