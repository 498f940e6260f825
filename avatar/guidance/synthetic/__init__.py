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
    all_swap_negatives,
    caption,
    change_negative,
    plan_caption,
    pose_negative,
    render_caption,
    swap_negative,
    swap_pair,
    swapped_caption,
)
from avatar.guidance.synthetic.generator import SyntheticBatch, SyntheticConfig, SyntheticRenderer, generate_batch
from avatar.guidance.synthetic.holdout import (
    HELD_OUT_COLOR_PAIRS,
    HELD_OUT_KIND_PATTERNS,
    color_family,
    held_out_combinations,
    is_held_out,
    sample_outfit,
)
from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS, pose_features, pose_words

__all__ = [
    "ARM_WORDS", "BACK_TEMPLATE", "BASIC_COLORS", "BODY_WORDS", "COLORS", "FACE_TEMPLATE", "HAIR_COLORS",
    "HELD_OUT_COLOR_PAIRS", "HELD_OUT_KIND_PATTERNS", "HELD_OUT_TEMPLATES", "PATTERNS", "TRAIN_TEMPLATES",
    "AppearanceConfig", "BodyParts", "CaptionPlan", "SyntheticBatch", "SyntheticConfig", "SyntheticRenderer",
    "all_swap_negatives", "caption", "change_negative", "color_family", "generate_batch", "held_out_combinations", "is_held_out",
    "plan_caption", "pose_features", "pose_words", "render_caption", "sample_appearance", "sample_outfit",
    "pose_negative", "swap_negative", "swap_pair", "swapped_caption", "vertex_colors",
]  # fmt: skip
