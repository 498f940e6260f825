"""Synthetic training data for the project's own image-text guidance model: dressed, posed Anny
renders with captions (a caption grammar with held-out paraphrases and hard negatives)."""

from avatar.guidance.synthetic.appearance import (
    BASIC_COLORS,
    COLORS,
    HAIR_COLORS,
    PATTERNS,
    AppearanceConfig,
    BodyParts,
    sample_appearance,
    vertex_colors,
)
from avatar.guidance.synthetic.captions import (
    BACK_TEMPLATE,
    FACE_TEMPLATE,
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    CaptionPlan,
    caption,
    change_negative,
    plan_caption,
    render_caption,
    swap_negative,
)
from avatar.guidance.synthetic.generator import SyntheticBatch, SyntheticConfig, SyntheticRenderer, generate_batch
from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS, pose_features, pose_words

__all__ = [
    "ARM_WORDS", "BACK_TEMPLATE", "BASIC_COLORS", "BODY_WORDS", "COLORS", "FACE_TEMPLATE", "HAIR_COLORS",
    "HELD_OUT_TEMPLATES", "PATTERNS", "TRAIN_TEMPLATES", "AppearanceConfig", "BodyParts", "CaptionPlan",
    "SyntheticBatch", "SyntheticConfig", "SyntheticRenderer", "caption", "change_negative", "generate_batch",
    "plan_caption", "pose_features", "pose_words", "render_caption", "sample_appearance", "swap_negative",
    "vertex_colors",
]  # fmt: skip
