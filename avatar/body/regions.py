"""Body regions from the canonical joints: a vertex belongs to the region of the joint that
dominates its skinning weights. Used to colour bodies in demos and to read per-region colours."""

from __future__ import annotations

import torch

from avatar.body.skeleton import JOINT_NAMES

REGION_OF_JOINT: dict[str, str] = {
    "pelvis": "hips", "spine1": "torso", "spine2": "torso", "spine3": "torso",
    "left_collar": "torso", "right_collar": "torso", "neck": "head", "head": "head",
    "left_shoulder": "arms", "right_shoulder": "arms", "left_elbow": "arms", "right_elbow": "arms",
    "left_wrist": "hands", "right_wrist": "hands", "left_hip": "legs", "right_hip": "legs",
    "left_knee": "legs", "right_knee": "legs", "left_ankle": "feet", "right_ankle": "feet",
    "left_foot": "feet", "right_foot": "feet",
}  # fmt: skip
REGIONS: tuple[str, ...] = ("head", "torso", "arms", "hands", "hips", "legs", "feet")

# A readable palette for demos (skin-toned head and hands, clothes-like elsewhere).
DEMO_PALETTE: dict[str, tuple[float, float, float]] = {
    "head": (0.87, 0.70, 0.58), "hands": (0.87, 0.70, 0.58), "torso": (0.80, 0.15, 0.15),
    "arms": (0.85, 0.35, 0.30), "hips": (0.15, 0.25, 0.65), "legs": (0.15, 0.25, 0.70),
    "feet": (0.15, 0.15, 0.15),
}  # fmt: skip

# The coarse body's look when nothing is known about the clothes (``coarse_color=skin``): skin
# where a person usually shows it (head, arms, hands), the renderer's neutral grey elsewhere.
SKIN_TONE: tuple[float, float, float] = (0.87, 0.70, 0.58)
NEUTRAL_GREY: tuple[float, float, float] = (0.7, 0.7, 0.7)  # the renderer's default albedo
GREY_PALETTE: dict[str, tuple[float, float, float]] = {r: NEUTRAL_GREY for r in REGIONS}
SKIN_PALETTE: dict[str, tuple[float, float, float]] = {
    **GREY_PALETTE, "head": SKIN_TONE, "arms": SKIN_TONE, "hands": SKIN_TONE,
}  # fmt: skip


def vertex_regions(skinning_weights: torch.Tensor) -> torch.Tensor:
    """(V,) index into REGIONS of each vertex's dominant joint's region."""
    joint_region = torch.tensor(
        [REGIONS.index(REGION_OF_JOINT[name]) for name in JOINT_NAMES], device=skinning_weights.device
    )
    return joint_region[skinning_weights.argmax(dim=1)]


def region_colors(
    skinning_weights: torch.Tensor, palette: dict[str, tuple[float, float, float]] = DEMO_PALETTE
) -> torch.Tensor:
    """(V, 3) vertex colours painting each region with its palette colour."""
    table = torch.tensor([palette[r] for r in REGIONS], dtype=skinning_weights.dtype, device=skinning_weights.device)
    return table[vertex_regions(skinning_weights)]
